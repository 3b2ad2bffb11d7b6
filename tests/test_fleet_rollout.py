"""A rollout over several ``pymoult run`` processes (``pymoult push --to A --to B --to C``): a
canary, then waves; at the first failure it halts and rolls back the processes already updated,
and says which version the fleet is on."""

import json
import pathlib
import textwrap

import pytest

from app_process import App, pymoult
from pymoult import client
from pymoult import rollout as rollout_module
from pymoult.errors import PymoultTypeError, PymoultValueError

pytestmark = pytest.mark.timeout(120)

GREETER = """
import time
from pymoult.lowlevel.alterability import staticUpdatePoint

FAIL_UPDATES = {fail}
count = 0

def greet(n):
    return f"v1 #{{n}}"

while True:
    count += 1
    print(greet(count), flush=True)
    staticUpdatePoint()
    time.sleep(0.02)
"""

#: Redefines greet; in a process whose FAIL_UPDATES is true, fails half-way (after the swap),
#: so that the manager rolls it back there.
UPDATE = """
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.relinking import redefineFunction

app = sys.modules["__main__"]

def greet(n):
    return f"v2 #{n}"

class Greet(Update):
    def apply(self):
        redefineFunction(app, "greet", greet)
        if app.FAIL_UPDATES:
            raise RuntimeError("injected failure")

fetch_manager("runtime").add_update(Greet("greet v2", threads=[get_runner()], timeout=10))
"""


@pytest.fixture
def fleet(tmp_path):
    """``fleet(*fail)``: one ``pymoult run`` greeter per flag (true: its updates fail)."""
    started = []

    def start(*fail):
        for flag in fail:
            path = tmp_path / f"greeter{len(started)}.py"
            path.write_text(textwrap.dedent(GREETER.format(fail=flag)))
            started.append(App(path))
        for process in started:
            process.stdout.wait_for(lambda line: line.startswith("v1"))
        return started

    yield start
    for process in started:
        process.close()


PROBE = "import sys\nopen({path!r}, 'w').write(sys.modules['__main__'].greet(0))\n"


def version_now(process):
    """The version of ``greet`` the process runs now, asked of the process itself: a script
    calls it and writes what it returns to a file."""
    answer = pathlib.Path(process.address[len("unix:"):] + ".probe")
    assert client.push(process.address, PROBE.format(path=str(answer)), timeout=20)["ok"]
    version = answer.read_text().split(" ")[0]
    answer.unlink()
    return version


def push(tmp_path, processes, *options):
    script = tmp_path / "update.py"
    script.write_text(UPDATE)
    targets = [arg for process in processes for arg in ("--to", process.address)]
    return pymoult("push", str(script), *targets, "--timeout", "20", *options, timeout=90)


def test_a_canary_then_a_wave_update_every_process(fleet, tmp_path):
    processes = fleet(False, False, False)
    result = push(tmp_path, processes, "--canary", "1", "--wave", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{processes[0].address}  canary: applied - greet v2"
    assert sorted(lines[1:3]) == sorted(f"{p.address}  wave 1: applied - greet v2"
                                        for p in processes[1:])
    assert lines[-1] == "all 3 processes updated"
    assert [version_now(p) for p in processes] == ["v2", "v2", "v2"]


def test_a_failure_on_the_second_process_rolls_the_first_back_and_halts(fleet, tmp_path):
    processes = fleet(False, True, False)
    result = push(tmp_path, processes, "--canary", "1", "--wave", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    first, second, third = (p.address for p in processes)
    lines = result.stdout.splitlines()
    assert lines[0] == f"{first}  canary: applied - greet v2"
    assert lines[1].startswith(f"{second}  wave 1: failed - 'greet v2' rolled back "
                               "(RuntimeError: injected failure)")
    assert lines[2] == f"{first}  canary: rolled back - greet v2; rolled back (revert greet v2)"
    assert lines[3] == f"{third}  not tried: not tried"
    assert lines[4] == (f"halted at {second}; 1 process rolled back; the fleet stays on the old "
                        "version (3 processes)")
    assert [version_now(p) for p in processes] == ["v1", "v1", "v1"]


def test_the_report_as_json_names_each_process_version(fleet, tmp_path):
    processes = fleet(True, False)
    result = push(tmp_path, processes, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["version"] == "old" and report["halted_at"] == processes[0].address
    assert [(p["stage"], p["outcome"], p["version"]) for p in report["processes"]] == [
        ("canary", "failed", "old"), ("not tried", "not tried", "old")]


def test_an_unreachable_process_halts_without_changing_anything(fleet, tmp_path):
    [alive] = fleet(False)
    result = push(tmp_path, [alive], "--to", f"unix:{tmp_path}/nobody.sock", "--canary", "0",
                  "--wave", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"unix:{tmp_path}/nobody.sock  wave 1: unreachable - no listener at" in result.stdout
    assert f"{alive.address}  wave 1: rolled back" in result.stdout
    assert version_now(alive) == "v1"


def test_two_phase_prepares_all_then_commits_all(fleet, tmp_path):
    processes = fleet(False, False, False)
    result = push(tmp_path, processes, "--two-phase", "--hold", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines[:3]) == sorted(f"{p.address}  prepare: prepared - greet v2"
                                       for p in processes)
    assert sorted(lines[3:6]) == sorted(f"{p.address}  commit: applied - greet v2"
                                        for p in processes)
    assert lines[6].startswith("all 3 processes updated, switched within ")
    assert [version_now(p) for p in processes] == ["v2", "v2", "v2"]
    report = json.loads(push(tmp_path, processes, "--two-phase", "--json").stdout)
    assert report["version"] == "new" and 0 <= report["skew"] < 10


def test_two_phase_a_failure_at_commit_rolls_the_others_back(fleet, tmp_path):
    processes = fleet(False, True, False)
    result = push(tmp_path, processes, "--two-phase")
    assert result.returncode == 1, result.stdout + result.stderr
    second = processes[1].address
    assert f"{second}  commit: failed - 'greet v2' rolled back (RuntimeError: injected " \
        "failure)" in result.stdout
    for other in (processes[0], processes[2]):
        assert f"{other.address}  commit: rolled back - greet v2; rolled back (revert " \
            "greet v2)" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"halted at {second}; 2 processes rolled back; the fleet stays on the old version "
        "(3 processes)")
    assert [version_now(p) for p in processes] == ["v1", "v1", "v1"]


def test_two_phase_one_unreachable_aborts_the_prepared(fleet, tmp_path):
    processes = fleet(False, False)
    nobody = f"unix:{tmp_path}/nobody.sock"
    result = push(tmp_path, processes, "--to", nobody, "--two-phase")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{nobody}  prepare: unreachable - no listener at" in result.stdout
    for process in processes:
        assert f"{process.address}  prepare: aborted - 'greet v2' rolled back" in result.stdout
    assert [version_now(p) for p in processes] == ["v1", "v1"]


def test_pymoult_rollback_reverts_the_last_push(fleet, tmp_path):
    [process] = fleet(False)
    assert push(tmp_path, [process], "--wait").returncode == 0  # one address: a plain push
    assert version_now(process) == "v2"
    result = pymoult("rollback", "--to", process.address, "--timeout", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["update 'revert greet v2': applied", "ok"]
    assert version_now(process) == "v1"
    again = pymoult("rollback", "--to", process.address, "greet v2")
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"pymoult rollback: {process.address}: nothing to roll back by the name 'greet v2': "
        "the listener can revert only updates applied by its last 4 pushes and still applied")


def test_bad_rollouts_are_refused_in_a_sentence(tmp_path):
    with pytest.raises(PymoultValueError, match="an address is given twice: unix:/a"):
        rollout_module.rollout(["unix:/a", "unix:/a"], "x = 1")
    with pytest.raises(PymoultValueError, match="a named pipe carries none: pipe:/p"):
        rollout_module.rollout(["unix:/a", "pipe:/p"], "x = 1")
    with pytest.raises(PymoultValueError, match="wave must be at least 1, got 0"):
        rollout_module.rollout(["unix:/a"], "x = 1", wave=0)
    with pytest.raises(PymoultTypeError, match="canary must be an int"):
        rollout_module.rollout(["unix:/a"], "x = 1", canary=1.5)
    with pytest.raises(PymoultValueError, match="at least one address"):
        rollout_module.rollout([], "x = 1")
    with pytest.raises(PymoultValueError, match="hold applies to a two-phase rollout only"):
        rollout_module.rollout(["unix:/a"], "x = 1", hold=3)
    with pytest.raises(PymoultValueError, match="hold must be a number of seconds above 0 and "
                                                "at most 60, got 61"):
        rollout_module.rollout(["unix:/a"], "x = 1", two_phase=True, hold=61)
    result = pymoult("push", "-", "--to", "unix:/a", "--to", "unix:/b", "--wave", "0",
                     stdin="x = 1\n")
    assert result.returncode == 2 and "--wave: must be at least 1, got 0" in result.stderr


def test_the_stages_are_a_canary_then_waves_of_the_size_given():
    members = ["a", "b", "c", "d", "e"]
    assert rollout_module.plan_stages(members, 1, 2) == [
        ("canary", ["a"]), ("wave 1", ["b", "c"]), ("wave 2", ["d", "e"])]
    assert rollout_module.plan_stages(members, 0, 5) == [("wave 1", members)]
    assert rollout_module.plan_stages(members, 5, 1) == [("canary", members)]


def test_the_stage_engine_halts_at_the_first_failure_and_rolls_back_newest_stage_first():
    reports = [rollout_module.ProcessReport(name, "not tried") for name in "abcd"]
    calls = []

    def push(group):
        calls.append(("push", [r.address for r in group]))
        for report in group:
            failed = report.address == "c"
            report.outcome = "failed" if failed else "applied"
            report.version = rollout_module.OLD if failed else rollout_module.NEW
            report.applied = [] if failed else ["u"]

    def roll_back(group):
        calls.append(("roll back", [r.address for r in group]))
        for report in group:
            report.outcome, report.version, report.applied = "rolled back", "old", []

    halted = rollout_module.run_stages(reports, rollout_module.plan_stages("abcd", 1, 2),
                                       push, roll_back)
    assert halted == "c"
    assert calls == [("push", ["a"]), ("push", ["b", "c"]), ("roll back", ["b"]),
                     ("roll back", ["a"])]
    assert reports[3].stage == "not tried" and reports[3].outcome == "not tried"
    report = rollout_module.fleet_report(reports, halted)
    assert report.version == rollout_module.OLD
    assert report.summary == ("halted at c; 2 processes rolled back; the fleet stays on the "
                              "old version (4 processes)")


def test_a_fleet_that_applied_everywhere_but_is_off_on_one_process_is_split_without_a_halt():
    reports = [rollout_module.ProcessReport("a", "wave 1", "applied", rollout_module.NEW),
               rollout_module.ProcessReport("b", "joined", "unknown", rollout_module.SPLIT)]
    report = rollout_module.fleet_report(reports, None)
    assert report.version == rollout_module.SPLIT and report.halted_at is None
    assert report.summary == "the fleet is NOT on one version: b is not on the new one (see above)"
