"""`pymoult run --watch`: saved edits of a loaded module's file applied to the running program,
end to end with real edits (in place, atomic rename-save, a syntax error then a fix, a burst)."""

import os
import textwrap

import pytest

from app_process import App

pytestmark = pytest.mark.timeout(60)

APP = """
import time
import jobs

n = 0
while True:
    n += 1
    print(jobs.process(n), flush=True)
    time.sleep(0.02)
"""

JOBS = 'def process(n):\n    return f"{VERSION} job {n}"\n'


def jobs_source(version):
    return JOBS.replace("{VERSION}", version)


@pytest.fixture
def watched(tmp_path):
    (tmp_path / "jobs.py").write_text(jobs_source("v1"))
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    app = App(tmp_path / "app.py", "--watch", "--no-listen", listens=False)
    app.stderr.wait_for(lambda line: line.startswith("pymoult: watching "))
    app.stdout.wait_for(lambda line: line.startswith("v1 job"))
    yield app
    app.close()


def applied(app, count):
    return app.stderr.wait_for(lambda line: line.startswith("pymoult: watch: applied jobs.py"),
                               count=count)


def test_an_edit_in_place_and_an_atomic_rename_save_are_applied(watched, tmp_path):
    (tmp_path / "jobs.py").write_text(jobs_source("v2"))
    applied(watched, 1)
    watched.stdout.wait_for(lambda line: line.startswith("v2 job"))
    temporary = tmp_path / ".jobs.py.swp-save"
    temporary.write_text(jobs_source("v3"))
    os.replace(temporary, tmp_path / "jobs.py")  # what editors and sed -i do
    applied(watched, 2)
    watched.stdout.wait_for(lambda line: line.startswith("v3 job"))
    numbers = [int(line.split()[-1]) for line in watched.stdout.lines]
    assert numbers == sorted(numbers)  # one process, its counter kept


def test_a_syntax_error_prints_one_line_and_the_fix_is_applied(watched, tmp_path):
    (tmp_path / "jobs.py").write_text(jobs_source("v2") + "  oops(\n")
    [refused] = watched.stderr.wait_for(lambda line: "jobs.py not applied" in line)
    assert "does not compile" in refused and refused.endswith("waiting for the next save")
    assert not any("Traceback" in line for line in watched.stderr.lines)
    (tmp_path / "jobs.py").write_text(jobs_source("v2"))
    applied(watched, 1)
    watched.stdout.wait_for(lambda line: line.startswith("v2 job"))


def test_a_burst_of_saves_is_applied_as_its_last_version(watched, tmp_path):
    for version in ("v5", "v6", "v7"):
        (tmp_path / "jobs.py").write_text(jobs_source(version))
    applied(watched, 1)
    watched.stdout.wait_for(lambda line: line.startswith("v7 job"))
    seen = {line.split()[0] for line in watched.stdout.lines}
    assert seen <= {"v1", "v5", "v6", "v7"} and "v7" in seen


def test_a_missing_watch_path_is_refused_before_the_application_starts(tmp_path):
    (tmp_path / "app.py").write_text("print('started', flush=True)\n")
    app = App(tmp_path / "app.py", f"--watch={tmp_path / 'nowhere'}", "--no-listen",
              listens=False)
    try:
        assert app.ended() == 1
        assert any("cannot watch" in line and "no such file or directory" in line
                   for line in app.stderr.lines)
        assert "started" not in app.stdout.lines
    finally:
        app.close()


LOOPING_JOBS = """
import time

def main():
    n = 0
    while True:
        n += 1
        print(f"v1 loop {n}", flush=True)
        time.sleep(0.02)
"""


def test_a_thread_left_in_the_old_loop_is_named_once(tmp_path):
    """The Runner never leaves jobs.main: the edit applies to its next call, and the watch says
    so after the applied line (once: not again in the log)."""
    (tmp_path / "jobs.py").write_text(LOOPING_JOBS)
    (tmp_path / "app.py").write_text("import jobs\njobs.main()\n")
    app = App(tmp_path / "app.py", "--watch", "--no-listen", listens=False)
    try:
        app.stderr.wait_for(lambda line: line.startswith("pymoult: watching "))
        app.stdout.wait_for(lambda line: line.startswith("v1 loop"))
        (tmp_path / "jobs.py").write_text(LOOPING_JOBS.replace("v1 loop", "v2 loop"))
        [warning] = app.stderr.wait_for(lambda line: line.startswith("pymoult: watch: warning:"))
        lines = app.stderr.lines
        assert lines.index(warning) == lines.index(applied(app, 1)[0]) + 1
        assert warning.startswith("pymoult: watch: warning: thread Runner still runs the old "
                                  "code of jobs.main (line ")
        assert warning.endswith(") until it returns")
        assert sum("still runs the old code" in line for line in app.stderr.lines) == 1
        count = len(app.stdout.lines)
        app.stdout.wait_for(lambda line: line.startswith("v1 loop"), count=count + 3)
        assert not any(line.startswith("v2") for line in app.stdout.lines)  # as it said
    finally:
        app.close()
