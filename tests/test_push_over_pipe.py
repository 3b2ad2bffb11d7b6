"""``pymoult push --to pipe:PATH``: update scripts written into a PipeListener's named pipe
(``pymoult run --listen pipe:PATH``); a pipe carries no reply, so the outcome is in the
application's log. Real processes."""

import json
import os
import sys
import textwrap
import threading
import types

import pytest

from app_process import WAIT, App, pymoult
from pymoult import client, protocol
from pymoult.errors import PymoultValueError
from pymoult.highlevel.listener import Listener, PipeListener

pytestmark = pytest.mark.timeout(60)

#: Lines are written in one call each (print writes the end of line apart): the update scripts
#: below print from their own threads.
GREETER = """
import sys, time
from pymoult.lowlevel.alterability import staticUpdatePoint

count = 0

def greet(n):
    return f"v1 #{n}"

while True:
    count += 1
    sys.stdout.write(greet(count) + "\\n")
    sys.stdout.flush()
    staticUpdatePoint()
    time.sleep(0.02)
"""

REDEFINE = """#parsed
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import SafeRedefineUpdate

def greet(n):
    return f"v2 #{n}"

fetch_manager("runtime").add_update(SafeRedefineUpdate(
    sys.modules["__main__"], "greet", greet, threads=[get_runner()], timeout=10))
"""

#: A script whose effect the application prints: the pipe is read in order, so once its line
#: is out, every frame written before it has been handled.
SAY = "import sys\nsys.stdout.write({text!r} + '\\n')\nsys.stdout.flush()\n"


def write(tmp_path, name, source, mode=None):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    if mode is not None:
        os.chmod(path, mode)
    return str(path)


@pytest.fixture
def piped(tmp_path):
    """``piped(*options)``: ``pymoult run --listen pipe:PATH [options] app.py`` running the
    greeter, killed (with its process group) at teardown."""
    started = []

    def start(*options):
        app = App(write(tmp_path, f"app{len(started)}.py", GREETER),
                  "--listen", f"pipe:{tmp_path / 'updates.fifo'}", *options)
        started.append(app)
        return app

    yield start
    for app in started:
        app.close()


def number(line):
    return int(line.split("#")[1])


def test_push_over_a_pipe_updates_the_running_application(piped, tmp_path):
    app = piped("-v")
    assert app.address == f"pipe:{tmp_path / 'updates.fifo'}"
    before = app.stdout.wait_for(lambda line: line.startswith("v1"))[0]
    pushed = pymoult("push", write(tmp_path, "update.py", REDEFINE), "--to", app.address)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.splitlines() == [
        f"sent to {app.address}; a pipe carries no reply: the application logs the outcome "
        "(pymoult run shows failures on its stderr, and successes with -v)"]
    after = app.stdout.wait_for(lambda line: line.startswith("v2"))[0]
    assert number(after) > number(before)  # the same process, its counter kept
    assert app.stderr.wait_for(
        lambda line: line.startswith("pymoult: info: update script 1 ran; 'redefine greet'"))


def test_push_json_over_a_pipe_says_it_was_delivered_and_has_no_reply(piped):
    app = piped()
    pushed = pymoult("push", "-", "--json", "--to", app.address, stdin=SAY.format(text="hi"))
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout) == {"delivered": True, "address": app.address,
                                         "reply": None}
    assert app.stdout.wait_for(lambda line: line == "hi")


def test_a_script_that_raises_is_reported_in_the_applications_log(piped):
    app = piped()
    pushed = pymoult("push", "-", "--to", app.address, stdin="1 / 0\n")
    assert pushed.returncode == 0  # delivered: the outcome is the application's to report
    assert app.stderr.wait_for(lambda line: line == (
        "pymoult: warning: update script 1 raised ZeroDivisionError: division by zero; "
        "no update queued"))


def test_a_pipe_with_a_token_runs_only_the_scripts_that_carry_it(piped, tmp_path):
    token_file = write(tmp_path, "token", "pipe-token-for-the-test", mode=0o600)
    app = piped("--token-file", token_file)
    marker = tmp_path / "marker"
    refused = pymoult("push", "-", "--to", app.address,
                      stdin=f"open({str(marker)!r}, 'w').close()\n")
    assert refused.returncode == 0
    assert app.stderr.wait_for(lambda line: line == (
        "pymoult: warning: Pymoult Pipe Listener: refused a frame: authentication failed: "
        "this listener needs a token"))
    accepted = pymoult("push", "-", "--to", app.address, "--token-file", token_file,
                       stdin=SAY.format(text="with the token"))
    assert accepted.returncode == 0, accepted.stderr
    assert app.stdout.wait_for(lambda line: line == "with the token")
    assert not marker.exists()


def test_wait_over_a_pipe_is_refused_and_nothing_is_sent(piped, tmp_path):
    app = piped()
    marker = tmp_path / "marker"
    refused = pymoult("push", "-", "--wait", "--to", app.address,
                      stdin=f"open({str(marker)!r}, 'w').close()\n")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"pymoult: push: --wait needs a reply, and a named pipe carries none: push to "
        f"{app.address} without --wait (the application logs the outcome), or to its socket "
        "listener"]
    assert pymoult("push", "-", "--to", app.address,
                   stdin=SAY.format(text="after")).returncode == 0
    assert app.stdout.wait_for(lambda line: line == "after")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["status", "history"])
def test_status_and_history_need_a_socket(tmp_path, command):
    result = pymoult(command, "--to", f"pipe:{tmp_path}/updates.fifo")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"pymoult {command}: pipe:{tmp_path}/updates.fifo is a named pipe, which carries no "
        f"reply: {command} needs the application's socket listener (unix: or tcp:)"]


def test_frames_of_concurrent_pushes_do_not_interleave(piped, tmp_path):
    app = piped()
    padding = "# " + "x" * 1000 + "\n"  # each frame far larger than the pipe's buffer
    scripts = [write(tmp_path, f"big{n}.py", SAY.format(text=f"big {n}") + padding * 300)
               for n in range(4)]
    results = [None] * len(scripts)

    def push(n):
        results[n] = pymoult("push", scripts[n], "--to", app.address)

    pushers = [threading.Thread(target=push, args=(n,)) for n in range(len(scripts))]
    for pusher in pushers:
        pusher.start()
    for pusher in pushers:
        pusher.join(WAIT * 2)
    assert [r.returncode for r in results] == [0] * len(scripts), results
    assert app.stdout.wait_for(lambda line: line.startswith("big "), count=len(scripts))
    assert "refused" not in app.stderr.text() and "dropped" not in app.stderr.text()


# -- what cannot be reached ----------------------------------------------------------------------

def test_a_missing_pipe(tmp_path):
    result = pymoult("push", "-", "--to", f"pipe:{tmp_path}/nothing", stdin="pass\n")
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"pymoult push: no pipe at {tmp_path}/nothing: the file does not exist"]


@pytest.mark.parametrize("kind", ["a regular file", "a directory"])
def test_a_path_that_is_not_a_pipe_is_left_alone(tmp_path, kind):
    path = tmp_path / "target"
    if kind == "a directory":
        path.mkdir()
    else:
        path.write_text("precious\n")
    result = pymoult("push", "-", "--to", f"pipe:{path}", stdin="pass\n")
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"pymoult push: {path} is not a named pipe ({kind})"]
    if kind == "a regular file":
        assert path.read_text() == "precious\n"


def test_a_pipe_nobody_reads_is_reported_at_once(tmp_path):
    path = tmp_path / "orphan.fifo"
    os.mkfifo(path, 0o600)
    result = pymoult("push", "-", "--to", f"pipe:{path}", stdin="pass\n")  # WAIT: no hang
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"pymoult push: no application is reading {path}: nothing has the pipe open (has the "
        "application stopped?)"]


def test_run_refuses_a_pipe_path_that_is_a_regular_file(tmp_path):
    path = tmp_path / "not-a-pipe"
    path.write_text("")
    os.chmod(path, 0o600)
    result = pymoult("run", "--listen", f"pipe:{path}", write(tmp_path, "app.py", "pass\n"))
    assert result.returncode == 1
    assert f"pymoult run: '{path}' must be a named pipe" in result.stderr
    assert "Traceback" not in result.stderr


# -- the library -----------------------------------------------------------------------------

def test_pipe_addresses_read_and_format_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    where = protocol.parse_address("pipe:updates.fifo")
    assert (where.family, where.path) == ("pipe", str(tmp_path / "updates.fifo"))
    assert protocol.parse_address(str(where)) == where
    with pytest.raises(PymoultValueError, match=r"^bad address 'pipe:': 'pipe:' needs the named "
                                                r"pipe's path$"):
        protocol.parse_address("pipe:")
    with pytest.raises(PymoultValueError, match=r"is a named pipe, not a socket$"):
        where.sockaddr


def test_the_client_cannot_wait_or_ask_over_a_pipe(tmp_path):
    address = f"pipe:{tmp_path}/updates.fifo"
    with pytest.raises(PymoultValueError, match=r"^cannot wait for the outcome of a push to "
                                                r"pipe:\S+: a named pipe carries no reply"):
        client.push(address, "pass\n")  # wait=True is the default
    for ask in (client.status, client.history):
        with pytest.raises(PymoultValueError, match=r"is a named pipe, which carries no reply"):
            ask(address)


def test_a_socket_listener_refuses_a_pipe_address(tmp_path):
    with pytest.raises(PymoultValueError, match=r"^a Listener listens on a socket \(unix: or "
                                                r"tcp:\); for pipe:\S+ use PipeListener\("):
        Listener(address=f"pipe:{tmp_path}/updates.fifo")


def test_the_client_writes_a_frame_the_pipe_listener_reads(tmp_path, monkeypatch):
    signal = types.SimpleNamespace(done=threading.Event())
    monkeypatch.setitem(sys.modules, "pipe_test_signal", signal)
    monkeypatch.delenv("PYMOULT_TOKEN", raising=False)
    pipe = PipeListener(str(tmp_path / "updates.fifo"), read_timeout=WAIT).start()
    try:
        assert client.push(pipe.address, "import sys\n"
                           "sys.modules['pipe_test_signal'].done.set()\n", wait=False) is None
        assert signal.done.wait(WAIT)
    finally:
        assert pipe.stop(WAIT)
