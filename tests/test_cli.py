"""End-to-end: applications under ``pymoult run``, updated with ``pymoult push`` (real
processes, real sockets); and the progress line ``push --wait`` draws on a terminal."""

import argparse
import io
import json
import os
import sys
import textwrap
import threading

import pytest

from app_process import WAIT, App, command_env, pymoult
from pymoult import cli

pytestmark = pytest.mark.timeout(60)

GREETER = """
import sys, time
from pymoult.lowlevel.alterability import staticUpdatePoint

running = True
count = 0

def greet(n):
    return f"v1 #{n}"

while running:
    count += 1
    print(greet(count), flush=True)
    staticUpdatePoint()
    time.sleep(0.02)
print("finished", flush=True)
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

FINISH = "import sys\nsys.modules['__main__'].running = False\n"

FAILING_UPDATE = """
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.relinking import redefineFunction

class Broken(Update):
    def apply(self):
        redefineFunction(sys.modules["__main__"], "greet", lambda n: f"broken #{n}")
        raise RuntimeError("half-way failure")

fetch_manager("runtime").add_update(Broken(name="broken"))
"""


def write(tmp_path, name, source, mode=None):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    if mode is not None:
        os.chmod(path, mode)
    return path


@pytest.fixture
def app(tmp_path):
    """``app(source, *options)``: a started ``pymoult run``, killed at teardown if still up."""
    started = []

    def start(source, *options, **kwargs):
        process = App(write(tmp_path, f"app{len(started)}.py", source), *options, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def number(line):
    return int(line.split("#")[1])


def test_push_wait_over_unix_updates_the_running_application(app, tmp_path):
    greeter = app(GREETER)
    assert greeter.address.startswith("unix:")
    before = greeter.stdout.wait_for(lambda line: line.startswith("v1"))[0]
    pushed = pymoult("push", str(write(tmp_path, "update.py", REDEFINE)), "--wait",
                     "--to", greeter.address)
    assert pushed.returncode == 0, pushed.stderr
    assert "update 'redefine greet': applied" in pushed.stdout and "ok" in pushed.stdout
    after = greeter.stdout.wait_for(lambda line: line.startswith("v2"))[0]
    assert number(after) > number(before)  # the counter went on: the process kept its state
    assert pymoult("push", "-", "--wait", "--to", greeter.address, stdin=FINISH).returncode == 0
    assert greeter.wait() == 0
    assert greeter.stdout.wait_for(lambda line: line == "finished")


def test_tcp_needs_the_token_and_a_wrong_one_runs_nothing(app, tmp_path):
    token = "s3cret-token-for-the-test"
    token_file = write(tmp_path, "token", token, mode=0o600)
    greeter = app(GREETER, "--listen", "tcp:127.0.0.1:0", "--token-file", str(token_file))
    assert greeter.address.startswith("tcp:127.0.0.1:")
    marker = tmp_path / "marker"
    script = write(tmp_path, "marker.py", f"open({str(marker)!r}, 'w').close()\n")

    for env in (command_env(), command_env(PYMOULT_TOKEN="a-wrong-token-long-enough")):
        refused = pymoult("push", str(script), "--wait", "--to", greeter.address, env=env)
        assert refused.returncode == 3, refused
        assert "token" in refused.stderr.lower()
    assert not marker.exists()

    accepted = pymoult("push", str(script), "--wait", "--to", greeter.address,
                       env=command_env(PYMOULT_TOKEN=token))
    assert accepted.returncode == 0, accepted.stderr
    assert marker.exists()
    via_file = pymoult("status", "--to", greeter.address, "--token-file", str(token_file))
    assert via_file.returncode == 0, via_file.stderr


def test_failing_script_and_failing_update_exit_non_zero_and_change_nothing(app, tmp_path):
    greeter = app(GREETER)
    raised = pymoult("push", "-", "--wait", "--to", greeter.address, stdin="1 / 0\n")
    assert raised.returncode == 1
    assert "script raised ZeroDivisionError: division by zero" in raised.stdout
    assert "FAILED" in raised.stdout

    failed = pymoult("push", str(write(tmp_path, "broken.py", FAILING_UPDATE)), "--wait",
                     "--to", greeter.address)
    assert failed.returncode == 1
    assert "update 'broken': rolled back - RuntimeError: half-way failure" in failed.stdout
    count = len(greeter.stdout.lines)
    greeter.stdout.wait_for(lambda line: line.startswith("v1"), count=count + 2)
    assert not any(line.startswith("broken") for line in greeter.stdout.lines)


def test_status_and_history_for_people_and_machines(app, tmp_path):
    greeter = app(GREETER)
    assert pymoult("push", str(write(tmp_path, "update.py", REDEFINE)), "--wait",
                   "--to", greeter.address).returncode == 0

    status = pymoult("status", "--to", greeter.address)
    assert status.returncode == 0
    assert "runtime" in status.stdout and "ThreadedManager" in status.stdout
    assert "1 applied" in status.stdout
    machine = json.loads(pymoult("status", "--json", "--to", greeter.address).stdout)
    runtime = [m for m in machine["managers"] if m["name"] == "runtime"][0]
    assert runtime["statistics"]["finished"] == {"applied": 1}

    history = pymoult("history", "--to", greeter.address)
    assert "redefine greet" in history.stdout and "applied" in history.stdout
    records = json.loads(pymoult("history", "--json", "--to", greeter.address).stdout)
    runtime = [m for m in records["managers"] if m["name"] == "runtime"][0]
    assert [r["state"] for r in runtime["history"]] == ["applied"]
    assert any("greet" in op for op in runtime["history"][0]["operations"])


def test_sys_exit_runs_finally_blocks_and_gives_the_exit_code(app):
    exiting = app("""
        import sys
        try:
            sys.exit(3)
        finally:
            print("cleanup ran", flush=True)
    """)
    assert exiting.wait() == 3
    assert exiting.stdout.wait_for(lambda line: line == "cleanup ran")


def test_an_uncaught_exception_prints_its_traceback_and_exits_1(app):
    crashing = app("raise LookupError('no such thing')\n")
    assert crashing.wait() == 1
    assert crashing.stderr.wait_for(lambda line: line == "LookupError: no such thing")
    lines = crashing.stderr.text().splitlines()
    assert "Traceback (most recent call last):" in lines
    frames = [line for line in lines if line.lstrip().startswith("File ")]
    assert frames and all("app0.py" in line for line in frames)  # no frame of the runtime's


def test_the_runtime_keeps_serving_while_other_application_threads_live(app, tmp_path):
    greeter = app("""
        import threading, time
        from pymoult.lowlevel.alterability import staticUpdatePoint
        running = True

        def work():
            while running:
                staticUpdatePoint()
                time.sleep(0.01)
            print("worker done", flush=True)

        threading.Thread(target=work).start()
        print("main done", flush=True)
    """)
    greeter.stdout.wait_for(lambda line: line == "main done")
    pushed = pymoult("push", "-", "--wait", "--to", greeter.address, stdin=FINISH)
    assert pushed.returncode == 0, pushed.stdout
    assert greeter.wait() == 0
    assert greeter.stdout.wait_for(lambda line: line == "worker done")


def test_ctrl_c_raises_keyboard_interrupt_in_the_application(app):
    waiting = app("""
        import sys, time
        from pymoult.lowlevel.alterability import staticUpdatePoint
        try:
            print("started", flush=True)
            while True:
                staticUpdatePoint()
                time.sleep(0.01)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(5)
    """)
    waiting.stdout.wait_for(lambda line: line == "started")
    waiting.interrupt()
    assert waiting.wait() == 5
    assert waiting.stdout.wait_for(lambda line: line == "interrupted")


def test_run_a_module_with_arguments(app, tmp_path):
    package = tmp_path / "demo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import sys\nprint('module args', sys.argv[1:], __name__, flush=True)\n")
    ran = pymoult("run", "--no-listen", "-m", "demo_pkg", "a", "--no-listen", "--help",
                  env=command_env(PYTHONPATH=os.pathsep.join(
                      [str(tmp_path), command_env()["PYTHONPATH"]])))
    assert ran.returncode == 0, ran.stderr
    assert "module args ['a', '--no-listen', '--help'] __main__" in ran.stdout


@pytest.mark.parametrize("args, code, message", [
    (("run",), 2, "give the application"),
    (("run", "--no-listen", "/nonexistent/app.py"), 1, "No such file"),
    (("run", "--no-listen", "-m", "no_such_module_here"), 1, "no module named"),
    (("push", "/nonexistent/update.py", "--to", "unix:/tmp/x.sock"), 2, "cannot read"),
    (("push", "-", "--to", "unix:/nonexistent/listener.sock"), 3, "no listener"),
    (("status", "--to", "bogus:address"), 2, "address"),
    (("status", "--to", "unix:/" + "s" * 200), 2, "201 bytes long, over the limit of"),
    (("push", "-", "--timeout", "inf", "--to", "unix:/tmp/x.sock"), 2, "at most"),
    (("run", "-m"), 2, "needs a module name"),
    (("status", "--to", "tcp:127.0.0.1:1", "--token-file", "/nonexistent"), 2, "token file"),
])
def test_bad_usage_is_reported_with_an_exit_code(args, code, message):
    result = pymoult(*args, stdin="")
    assert result.returncode == code, result
    assert message.lower() in result.stderr.lower()


def test_syntax_error_in_the_application_is_reported_before_anything_runs(tmp_path):
    result = pymoult("run", str(write(tmp_path, "bad.py", "def broken(:\n")))
    assert result.returncode == 1 and "SyntaxError" in result.stderr
    assert "listening" not in result.stderr


REBOOT = """
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import ThreadRebootUpdate

def new_main():
    print("rebooted into a new main", flush=True)
    sys.exit(7)

fetch_manager("runtime").add_update(ThreadRebootUpdate(get_runner(), new_main, timeout=10))
"""


def test_the_runner_can_be_rebooted_into_a_new_main_whose_exit_code_counts(app, tmp_path):
    greeter = app(GREETER)
    greeter.stdout.wait_for(lambda line: line.startswith("v1"))
    pushed = pymoult("push", str(write(tmp_path, "reboot.py", REBOOT)), "--wait",
                     "--to", greeter.address)
    assert pushed.returncode == 0, pushed.stdout
    assert greeter.wait() == 7
    assert greeter.stdout.wait_for(lambda line: line == "rebooted into a new main")
    assert "Traceback" not in greeter.stderr.text()


def test_a_script_whose_exception_cannot_be_shown_is_still_a_failure(app):
    greeter = app(GREETER)
    unprintable = ("class Odd(Exception):\n"
                   "    def __str__(self):\n"
                   "        raise RuntimeError('no')\n"
                   "raise Odd()\n")
    result = pymoult("push", "-", "--wait", "--to", greeter.address, stdin=unprintable)
    assert result.returncode == 1 and "script raised Odd" in result.stdout


# -- the progress line of push --wait ----------------------------------------------------------

def test_the_progress_line_shows_waits_tries_and_objects_converted():
    waiting = {"name": "greet v2", "state": "waiting for alterability", "tries": 3,
               "max_tries": 10, "postponements": 2, "waited": 2.54, "patience": 10.0,
               "progress": None}
    converting = {"name": "convert Point", "state": "applying", "tries": 1, "max_tries": 10,
                  "postponements": 0, "waited": None, "patience": 1.0,
                  "progress": {"step": "eager update of app.Point", "done": 40960,
                               "total": 100000}}
    status = {"ok": True, "managers": [{"name": "runtime", "current": waiting},
                                       {"name": "idle", "current": None},
                                       {"name": "other", "current": converting}]}
    assert cli._progress_line(12.5, status) == (
        "waiting  12.5 s | greet v2: waiting for alterability 2.5 s of 10 s, try 3/10, "
        "postponed 2 time(s) | convert Point: applying, 40960/100000 objects (eager update of "
        "app.Point)")


def test_the_progress_line_without_news():
    assert cli._progress_line(0.5, {}) == "waiting   0.5 s"  # status unreachable
    pending = {"name": "u", "state": "pending", "tries": 0, "max_tries": 10,
               "postponements": 0, "waited": None, "patience": 1.0,
               "progress": {"step": "an earlier step", "done": 5, "total": 5}}
    assert cli._progress_line(1.0, {"managers": [{"current": pending}]}) == (
        "waiting   1.0 s | u: pending")  # a count shows only while applying


class Terminal(io.StringIO):
    """A stderr that says it is a terminal and tells when a line was drawn."""

    def __init__(self):
        super().__init__()
        self.drawn = threading.Event()

    def isatty(self):
        return True

    def write(self, text):
        if text.startswith("\rwaiting"):
            self.drawn.set()
        return super().write(text)


def test_push_wait_draws_the_progress_line_on_a_terminal_then_clears_it(monkeypatch):
    from pymoult.highlevel.listener import Listener

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    listener = Listener().start()
    try:
        worker = threading.Thread(target=terminal.drawn.wait, args=(WAIT,), daemon=True)
        worker.start()
        args = argparse.Namespace(wait=True, to=listener.address)
        cli._show_progress(worker, args, None)
    finally:
        assert listener.stop(WAIT)
    assert terminal.drawn.is_set()
    text = terminal.getvalue()
    assert text.startswith("\rwaiting ") and text.endswith("\r")
    assert text.rstrip("\r").split("\r")[-1].strip() == ""  # the line is cleared at the end


def test_push_draws_nothing_when_stderr_is_not_a_terminal(monkeypatch):
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    worker = threading.Thread(target=lambda: None)
    worker.start()
    cli._show_progress(worker, argparse.Namespace(wait=True, to="unix:/nonexistent"), None)
    assert plain.getvalue() == ""
