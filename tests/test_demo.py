"""``pymoult demo``: the built-in demo and each kind of example run in one command (start,
push, show, Ctrl-C), and every way a demo can fail: it says why, exits non-zero, and leaves no
process behind."""

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from app_process import WAIT, _Lines, command_env
from pymoult.demo import CHECKOUT_EXAMPLES, NoSuchExample, find_example, update_scripts

pytestmark = pytest.mark.timeout(90)

DEMO_TIMEOUT = 60


def start_demo(*args):
    """``pymoult demo *args`` in a session of its own (a process group, as in a terminal)."""
    return subprocess.Popen([sys.executable, "-m", "pymoult", "demo", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=command_env(), start_new_session=True)


def demo(*args):
    """Run ``pymoult demo *args`` to its end; on a timeout, kill its whole group (its
    application and client too: nothing is left running) and fail."""
    process = start_demo(*args)
    try:
        stdout, stderr = process.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def lines_of(output, prefix):
    """The lines a process printed, as the demo shows them: ``  prefix | line``."""
    return [line.split(" | ", 1)[1] for line in output.splitlines()
            if line.lstrip().startswith(f"{prefix} | ")]


def split_at_push(output):
    """The demo's output before it pushed the update, and after the push's outcome (lines
    between may come from either version: the update applies before the push replies)."""
    before, pushing, rest = output.partition("\nPushing ")
    _, ok, after = rest.partition("    push | ok\n")
    assert pushing and ok, output
    return before, after


def test_the_builtin_demo_updates_its_application_live():
    result = demo()
    assert result.returncode == 0, result.stdout + result.stderr
    before, after = split_at_push(result.stdout)
    greetings = lines_of(result.stdout, "app")[1:]  # after the runtime's address
    assert [int(re.search(r"#(\d+)", line).group(1)) for line in greetings[:-1]] == \
        list(range(1, len(greetings)))  # one counter, across the update
    assert "from version 2" not in before
    # a version-1 line printed just before the apply may be shown after the push's reply:
    # the order of the greetings themselves is what counts, one switch from 1 to 2
    versions = ["from version 2" in line for line in greetings[:-1]]
    assert versions == sorted(versions) and versions.count(False) >= 3
    assert "from version 2 (updated live, counter kept)" in after
    assert "The application exited with code 0." in result.stdout


def test_an_example_runs_in_one_command_by_its_name():
    result = demo("tictac", "--interval", "0.01")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"pymoult push \S*examples/tictac/update\.py --wait --to unix:",
                     result.stdout)
    assert "update 'tic/tac v2': applied" in result.stdout
    before, after = split_at_push(result.stdout)
    assert len(re.findall(r"pair \d+: tic-tac", before)) >= 3
    assert len(re.findall(r"pair \d+: TIC-TAC", after)) >= 3
    pairs = re.findall(r"pair \d+: (\S+)", result.stdout)
    assert pairs == sorted(pairs, key=lambda pair: pair == "TIC-TAC")  # old, then new only
    assert not re.search(r"tic-TAC|TIC-tac", result.stdout)
    assert re.search(r"app \| stopped after \d+ pairs", result.stdout)
    assert "The application exited with code 0." in result.stdout


def test_the_http_example_runs_with_a_client_that_keeps_its_connections():
    result = demo("http_auth", "--port", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"python \S*examples/http_auth/client\.py http://127\.0\.0\.1:\d+/",
                     result.stdout)
    before, after = split_at_push(result.stdout)
    rounds_before, rounds_after = lines_of(before, "client"), lines_of(after, "client")
    assert len(rounds_before) >= 3 and all("anonymous 200" in r for r in rounds_before)
    # the first round shown after the push's reply may have straddled the update
    updated = [r for r in rounds_after if r.startswith("round ")][1:]
    assert len(updated) >= 2
    assert all("anonymous 401" in r and "alice 200" in r and "user alice" in r
               for r in updated)
    assert "no request failed, the same connections throughout" in rounds_after[-1]
    assert re.fullmatch(r"stopped after \d+ requests on 2 connections",
                        lines_of(result.stdout, "app")[-1])
    assert "The client exited with code 0." in result.stdout
    assert "The application exited with code 0." in result.stdout


def test_the_ftp_example_runs_with_a_client_that_transfers_files_throughout():
    result = demo("ftp_server", "--port", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    before, after = split_at_push(result.stdout)
    rounds_before = [r for r in lines_of(before, "client") if r.startswith("round ")]
    # the first round shown after the push's reply may have straddled the update
    rounds_after = [r for r in lines_of(after, "client") if r.startswith("round ")][1:]
    assert len(lines_of(before, "client")) >= 3  # connected, and rounds
    assert rounds_before and len(rounds_after) >= 2
    assert all('SITE STATS: 500' in r for r in rounds_before)
    assert all("NOOP: 200 NOOP: nothing done, by a server updated live." in r and
               "1 connections since the server started" in r for r in rounds_after)
    assert all("read back identical" in r for r in rounds_before + rounds_after)
    assert re.fullmatch(r"stopped: 1 connections, (\d+) files received, \1 sent",
                        lines_of(result.stdout, "app")[-1])
    assert "client: connected: 220 pymoult example FTP server, version 1" in result.stdout
    assert "The client exited with code 0." in result.stdout


# -- failures --------------------------------------------------------------------------------

APP = r"""
import os, sys, time
from pymoult.lowlevel.alterability import staticUpdatePoint

VERSION = "v1"
print(f"pid {os.getpid()}", flush=True)
n = 0
try:
    while True:
        n += 1
        sys.stdout.write(f"line {n} from {VERSION}\n")  # one write: no line mixed with a
        sys.stdout.flush()                               # script's, printed from another thread
        staticUpdatePoint("after a line")
        time.sleep(0.01)
except KeyboardInterrupt:
    print(f"stopped after {n} lines", flush=True)
"""

#: APP, printing first the URL a client.py is given.
SERVING_APP = APP.replace('print(f"pid', 'print("serving on tcp://127.0.0.1:1/", flush=True)\n'
                                         'print(f"pid')

SET_VERSION = r"""
import sys
sys.stdout.write("update {name} ran\n")
sys.stdout.flush()
sys.modules["__main__"].VERSION = "{version}"
"""


def example(tmp_path, app=APP, client=None, **updates):
    directory = tmp_path / "example"
    directory.mkdir()
    (directory / "app.py").write_text(textwrap.dedent(app))
    if client is not None:
        (directory / "client.py").write_text(textwrap.dedent(client))
    for name, script in updates.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(script))
    return directory


def assert_gone(output):
    """The application whose pid it printed first no longer runs."""
    pid = int(re.search(r"app \| pid (\d+)", output).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_update_scripts_are_pushed_in_number_order(tmp_path):
    directory = example(tmp_path, update1=SET_VERSION.format(name=1, version="v2"),
                        update2=SET_VERSION.format(name=2, version="v3"))
    result = demo(str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    apps = lines_of(result.stdout, "app")
    assert apps.index("update 1 ran") < apps.index("update 2 ran")
    assert len([line for line in apps if line.endswith("from v3")]) >= 3
    assert result.stdout.index("Pushing update1.py") < result.stdout.index("Pushing update2.py")


def test_an_update_that_fails_stops_the_demo_with_its_reason(tmp_path):
    directory = example(tmp_path, update='raise RuntimeError("refused on purpose")\n')
    result = demo(str(directory))
    assert result.returncode == 1, result.stdout
    assert "push | script raised RuntimeError: refused on purpose" in result.stdout
    assert "pymoult demo: the update update.py did not apply" in result.stderr
    assert "Ctrl-C, as a user ends it" not in result.stdout
    assert_gone(result.stdout)


def test_an_application_that_crashes_at_start_is_reported(tmp_path):
    directory = example(tmp_path, app="raise SystemExit(5)\n", update="x = 1\n")
    result = demo(str(directory))
    assert result.returncode == 1, result.stdout
    assert "the application exited with code 5" in result.stderr
    assert "Pushing" not in result.stdout


def test_a_client_that_fails_fails_the_demo(tmp_path):
    failing = """
    import sys
    print(f"client of {sys.argv[1]}", flush=True)
    sys.exit(3)
    """
    directory = example(tmp_path, app=SERVING_APP, client=failing, update="x = 1\n")
    result = demo(str(directory))
    assert result.returncode == 1, result.stdout
    assert "client | client of tcp://127.0.0.1:1/" in result.stdout
    assert "the client exited with code 3" in result.stderr
    assert_gone(result.stdout)


def test_a_client_needs_the_url_its_application_prints(tmp_path):
    directory = example(tmp_path, app="print('no address here', flush=True)\n",
                        client="print('never started')\n", update="x = 1\n")
    result = demo(str(directory))
    assert result.returncode == 1, result.stdout
    assert "the application printed no URL for its client" in result.stderr
    assert "never started" not in result.stdout


@pytest.mark.parametrize("name, message", [
    ("no-such-example", "no example 'no-such-example'"),
    ("app-only", "holds no update script"),
    ("empty", "holds no app.py"),
])
def test_a_directory_that_is_not_an_example_is_refused(tmp_path, name, message):
    (tmp_path / "app-only").mkdir()
    (tmp_path / "app-only" / "app.py").write_text("print('hi')\n")
    (tmp_path / "empty").mkdir()
    target = name if name == "no-such-example" else str(tmp_path / name)
    result = demo(target)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Starting" not in result.stdout


def test_an_unknown_example_lists_the_known_ones():
    result = demo("helo")
    assert result.returncode == 2
    assert "one of: asyncio_server, data, ftp_server, hello, http_auth" in result.stderr


def test_every_example_is_a_demo_target():
    names = sorted(path.parent.name for path in CHECKOUT_EXAMPLES.glob("*/app.py"))
    assert {"hello", "tictac", "http_auth", "ftp_server"} <= set(names)
    for name in names:
        directory = find_example(name)
        assert (directory / "update.py").is_file(), name



def test_a_name_finds_a_complete_example_and_a_path_only_that_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # a directory of the user's, named like an example
    (tmp_path / "examples" / "hello").mkdir(parents=True)
    (tmp_path / "examples" / "hello" / "app.py").write_text("")  # incomplete: skipped
    assert find_example("data") == CHECKOUT_EXAMPLES / "data"
    assert find_example("hello") == CHECKOUT_EXAMPLES / "hello"
    (tmp_path / "examples" / "hello" / "update.py").write_text("")
    assert find_example("hello") == tmp_path / "examples" / "hello"  # ./examples first
    with pytest.raises(NoSuchExample, match="data holds no app.py"):
        find_example("./data")
    with pytest.raises(NoSuchExample, match="no directory missing/"):
        find_example("missing/")


def test_update_scripts_are_update_then_numbered_ones_in_number_order(tmp_path):
    for name in ("update10.py", "update2.py", "update.py", "update_helpers.py", "updates.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "update3.py").mkdir()
    assert [path.name for path in update_scripts(tmp_path)] == \
        ["update.py", "update2.py", "update10.py"]


LOUD_APP = APP.replace("except KeyboardInterrupt:", "finally:")  # lets it through: exit 130


def test_an_application_that_lets_ctrl_c_through_has_stopped_cleanly(tmp_path):
    directory = example(tmp_path, app=LOUD_APP, update=SET_VERSION.format(name=1, version="v2"))
    result = demo(str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The application exited with code 130." in result.stdout


def test_a_process_that_ignores_ctrl_c_is_killed_and_named(tmp_path):
    stubborn = """
    import signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for n in range(10000):
        print(f"client line {n}", flush=True)
        time.sleep(0.01)
    """
    directory = example(tmp_path, app=SERVING_APP, client=stubborn, update="x = 1\n")
    result = demo(str(directory))
    assert result.returncode == 1, result.stdout
    assert "The client did not stop within 5 s of Ctrl-C: killed." in result.stdout
    assert "The application exited with code 0." in result.stdout
    assert result.stderr.strip() == "pymoult demo: the client did not stop on Ctrl-C"


@pytest.mark.parametrize("how", ["Ctrl-C in the terminal", "SIGTERM to the demo"])
def test_a_demo_stopped_midway_stops_its_application_cleanly(tmp_path, how):
    directory = example(tmp_path, update=SET_VERSION.format(name=1, version="v2"))
    process = start_demo(str(directory))
    try:
        output = _Lines(process.stdout)
        output.wait_for(lambda line: "line 3 from v1" in line)
        if how == "SIGTERM to the demo":
            process.send_signal(signal.SIGTERM)
        else:  # the terminal signals the whole foreground group: the demo and its processes
            os.killpg(process.pid, signal.SIGINT)
        code = process.wait(WAIT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with output._changed:
        assert output._changed.wait_for(lambda: output.ended, WAIT)
    assert code == (143 if how == "SIGTERM to the demo" else 130)
    text = output.text()
    assert re.search(r"app \| stopped after \d+ lines", text)  # its own Ctrl-C handling ran
    assert_gone(text)


def test_a_directory_whose_update_scripts_went_away_fails_before_starting(tmp_path, capsys):
    from pymoult.demo import _Demo

    directory = example(tmp_path)  # app.py only: its update scripts removed after the lookup
    assert _Demo(directory, []).run() == 1
    captured = capsys.readouterr()
    assert "holds no update script" in captured.err
    assert "Starting the application" not in captured.out
