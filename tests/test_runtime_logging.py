"""``pymoult run`` shows the ``pymoult`` log: an application's ``log(0, ...)`` lines and
Pymoult's warnings on stderr, unless the application configured logging itself; ``-v``,
``--log-level`` and ``--log-file`` change it (real processes)."""

import re
import subprocess
import sys
import textwrap

import pytest

from app_process import WAIT, App, command_env, pymoult

pytestmark = pytest.mark.timeout(60)

LEVELS = """
from pymoult.highlevel.listener import log
log(0, "level 0")
log(1, "level 1")
log(2, "level 2")
print("done", flush=True)
"""

GREETER = """
import time
from pymoult.lowlevel.alterability import staticUpdatePoint

while True:
    print("greeting", flush=True)
    staticUpdatePoint()
    time.sleep(0.02)
"""


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def run(tmp_path, source, *options):
    """``pymoult run --no-listen [options] app.py`` to its end; the CompletedProcess."""
    result = pymoult("run", "--no-listen", *options, write(tmp_path, "app.py", source))
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_an_applications_log_0_line_shows_on_stderr_and_levels_1_and_2_do_not(tmp_path):
    result = run(tmp_path, LEVELS)
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["done"]
    assert result.stderr.splitlines() == ["pymoult: level 0"]


def test_the_library_alone_prints_nothing(tmp_path):
    result = subprocess.run([sys.executable, write(tmp_path, "plain.py", LEVELS)],
                            capture_output=True, text=True, env=command_env(), timeout=WAIT)
    assert result.returncode == 0
    assert (result.stdout, result.stderr) == ("done\n", "")


def test_pymoults_own_warnings_show_on_the_applications_stderr(tmp_path):
    greeter = App(write(tmp_path, "app.py", GREETER))
    try:
        pushed = pymoult("push", "-", "--to", greeter.address, stdin="1 / 0\n")
        assert pushed.returncode == 1
        assert greeter.stderr.wait_for(lambda line: re.fullmatch(
            r"pymoult: warning: update script 1 \(pushed by connection \d+ from uid \d+ "
            r"pid \d+\) raised ZeroDivisionError: division by zero; no update queued", line))
        assert greeter.stderr.wait_for(lambda line: line == "ZeroDivisionError: division by zero")
    finally:
        greeter.close()


@pytest.mark.parametrize("options, shown", [
    ((), ["level 0"]),
    (("-v",), ["level 0", "level 1"]),
    (("--verbose",), ["level 0", "level 1"]),
    (("-vv",), ["level 0", "level 1", "level 2"]),
    (("-v", "-v", "-v"), ["level 0", "level 1", "level 2"]),
    (("--log-level", "0"), ["level 0"]),
    (("--log-level", "warning"), ["level 0"]),
    (("--log-level", "1"), ["level 0", "level 1"]),
    (("--log-level", "INFO"), ["level 0", "level 1"]),
    (("--log-level=debug",), ["level 0", "level 1", "level 2"]),
    (("--log-level", "2"), ["level 0", "level 1", "level 2"]),
])
def test_v_and_log_level_choose_the_original_level_shown(tmp_path, options, shown):
    result = run(tmp_path, LEVELS, *options)
    assert result.returncode == 0
    assert [line for line in result.stderr.splitlines() if "level" in line] == \
        [f"pymoult: {text}" for text in shown]


def test_v_also_shows_pymoults_own_steps(tmp_path):
    result = pymoult("run", "-v", write(tmp_path, "app.py", LEVELS))
    assert result.returncode == 0
    assert re.search(r"^pymoult: info: Pymoult Listener: listening on unix:/\S+$",
                     result.stderr, re.MULTILINE), result.stderr
    quiet = pymoult("run", write(tmp_path, "app.py", LEVELS))
    assert "pymoult: info:" not in quiet.stderr


@pytest.mark.parametrize("options, source, shown", [
    (("-vv",), """
        from pymoult.highlevel.listener import log, set_loglevel
        set_loglevel(0)
        log(2, "debug line")
        log(1, "info line")
        log(0, "application line")
        """, ["pymoult: application line"]),
    ((), """
        from pymoult.highlevel.listener import log, set_loglevel
        set_loglevel(2)
        log(2, "debug line")
        log(0, "application line")
        """, ["pymoult: debug line", "pymoult: application line"]),
], ids=["lowered", "raised"])
def test_the_applications_set_loglevel_takes_precedence(tmp_path, options, source, shown):
    result = run(tmp_path, source, *options)
    assert result.returncode == 0
    assert result.stderr.splitlines() == shown


BASIC_CONFIG = """
import logging
from pymoult.highlevel.listener import log
logging.basicConfig(format="app-log %(levelname)s %(message)s")
log(0, "v1")
logging.getLogger("pymoult").error("an error")
"""


@pytest.mark.parametrize("source, stderr, stdout", [
    (BASIC_CONFIG, ["app-log WARNING v1", "app-log ERROR an error"], []),
    ("""
        import logging, sys
        from pymoult.highlevel.listener import log
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("own handler: %(message)s"))
        logging.getLogger("pymoult").addHandler(handler)
        log(0, "v1")
        """, [], ["own handler: v1"]),
    ("""
        import logging, sys
        from pymoult.highlevel.listener import log
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("root handler: %(message)s"))
        logging.getLogger().addHandler(handler)
        log(0, "v1")
        """, [], ["root handler: v1"]),
    ("""
        import logging
        from pymoult.highlevel.listener import log
        log(0, "before")
        logging.basicConfig(format="app-log %(message)s")
        log(0, "after")
        """, ["pymoult: before", "app-log after"], []),
    ("""
        import logging, sys
        from pymoult.highlevel.listener import log
        logging.getLogger("myapp").addHandler(logging.StreamHandler(sys.stdout))
        log(0, "v1")
        """, ["pymoult: v1"], []),
    ("""
        import logging, sys
        from pymoult.highlevel.listener import log
        logging.basicConfig(format="app-log %(message)s")
        logging.getLogger("pymoult").propagate = False
        log(0, "v1")
        """, ["pymoult: v1"], []),
], ids=["basicConfig", "pymoult logger handler", "root handler", "configured part-way",
        "another logger's handler does not count", "pymoult logger not propagating"])
def test_nothing_extra_when_the_application_configured_logging_itself(
        tmp_path, source, stderr, stdout):
    result = run(tmp_path, source)
    assert result.returncode == 0
    assert result.stderr.splitlines() == stderr
    assert result.stdout.splitlines() == stdout


def test_set_logpath_sends_the_log_to_the_applications_file_only(tmp_path):
    own = tmp_path / "own.log"
    result = run(tmp_path, f"""
        from pymoult.highlevel.listener import log, set_logpath
        set_logpath({str(own)!r})
        log(0, "v1")
        set_logpath(None)
        log(0, "back on stderr")
        """)
    assert result.returncode == 0
    assert result.stderr.splitlines() == ["pymoult: back on stderr"]
    assert re.fullmatch(r"\S+ \S+ WARNING \[Runner\] v1\n", own.read_text())


FILE_LINE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} %s \[%s\] %s"


def test_log_file_writes_the_log_there_instead_of_stderr(tmp_path):
    log_file = tmp_path / "pymoult.log"
    log_file.write_text("kept\n")
    result = run(tmp_path, LEVELS, "--log-file", str(log_file), "-v")
    assert result.returncode == 0
    assert result.stderr == ""
    lines = log_file.read_text().splitlines()
    assert lines[0] == "kept"  # appended to
    assert re.fullmatch(FILE_LINE % ("WARNING", "Runner", "level 0"), lines[1]), lines
    assert re.fullmatch(FILE_LINE % ("INFO", "Runner", "level 1"), lines[2]), lines
    assert len(lines) == 3


def test_log_file_gets_the_log_whatever_the_application_configured(tmp_path):
    log_file, own = tmp_path / "pymoult.log", tmp_path / "own.log"
    result = run(tmp_path, BASIC_CONFIG + f"""
from pymoult.highlevel.listener import set_logpath
set_logpath({str(own)!r})
log(0, "v2")
""", "--log-file", str(log_file))
    assert result.returncode == 0
    assert result.stderr.splitlines() == ["app-log WARNING v1", "app-log ERROR an error",
                                          "app-log WARNING v2"]
    assert [line.split("] ", 1)[1] for line in log_file.read_text().splitlines()] == \
        ["v1", "an error", "v2"]
    assert own.read_text().endswith("] v2\n")


@pytest.mark.parametrize("options, message", [
    (("--log-level", "loud"), "pymoult run: error: argument --log-level: the level must be 0, "
                              "1, 2, warning, info or debug, got 'loud'"),
    (("--log-level", "3"), "pymoult run: error: argument --log-level: the level must be 0, 1, "
                           "2, warning, info or debug, got '3'"),
    (("-v", "--log-level", "1"), "pymoult: run: give -v or --log-level, not both"),
    (("--log-file", "{tmp}/missing/pymoult.log"),
     "pymoult: run: cannot write the log to '{tmp}/missing/pymoult.log': No such file or "
     "directory"),
    (("--log-file", "{tmp}"), "pymoult: run: cannot write the log to '{tmp}': Is a directory"),
])
def test_bad_log_options_exit_2_with_a_sentence_and_run_nothing(tmp_path, options, message):
    marker = tmp_path / "ran"
    app = write(tmp_path, "app.py", f"open({str(marker)!r}, 'w').close()\n")
    result = pymoult("run", "--no-listen", *[o.format(tmp=tmp_path) for o in options], app)
    assert result.returncode == 2
    assert message.format(tmp=tmp_path) in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_the_log_of_an_application_that_cannot_start_is_closed_cleanly(tmp_path):
    log_file = tmp_path / "pymoult.log"
    result = pymoult("run", "--no-listen", "--log-file", str(log_file),
                     str(tmp_path / "missing.py"))
    assert result.returncode == 1
    assert "pymoult run:" in result.stderr and "No such file" in result.stderr
    assert log_file.read_text() == ""
