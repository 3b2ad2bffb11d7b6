"""A real Dask cluster of worker processes updated live (``pymoult.delivery.dask_cluster``).

One ``distributed.LocalCluster`` (3 worker processes, 2 threads each) serves every test of the
file; each test updates a module of its own, written to a directory the worker processes import
from (``sys.path`` is handed to spawned processes). The scheduler runs in this process, which has
imported the modules to submit their functions: it is one more target of each update.
"""

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

if os.environ.get("PYMOULT_DASK_TESTS") != "1":
    pytest.skip("run in a process of their own by tests/test_dask_cluster_isolated.py: the "
                "cluster's scheduler runs in the test process and leaves it in a state in "
                "which later tests ran many times slower on 3.12", allow_module_level=True)

distributed = pytest.importorskip("distributed")

from app_process import command_env  # noqa: E402
from pymoult.delivery.dask_cluster import (SCHEDULER, ClusterUpdate,  # noqa: E402
                                           cluster_versions, cluster_workers, undo_cluster,
                                           update_cluster)
from pymoult.errors import ModuleUpdateError, PymoultTypeError, PymoultValueError  # noqa: E402

pytestmark = pytest.mark.timeout(120)

WAIT = 60  # seconds any single wait of a test may take before it fails

V1 = '''\
"""Jobs that the cluster's tasks run (written by the test)."""
import os
import time
import uuid

MADE = 0


class Record:
    def __init__(self, number):
        self.number = number
        self.token = uuid.uuid4().hex

    def label(self):
        return f"v1:{self.number}"


def make(number):
    global MADE
    MADE += 1
    return Record(number)


def make_bad(number):
    record = make(number)
    record.bad = True
    return record


def made():
    return MADE


def token_of(record):
    return record.token


def label_of(record):
    return record.label()


def work(x):
    began = time.time()
    end = time.perf_counter() + 0.002
    while time.perf_counter() < end:
        pass
    return ("v1", x, os.getpid(), began, time.time())


def held(x, started, release):
    from distributed import Event
    Event(started).set()
    Event(release).wait(60)
    return ("v1", x)


def upgrade(record):
    if getattr(record, "bad", False):
        raise ValueError(f"record {record.number} cannot be upgraded")
    record.unit = "m"


def update_state():
    from pymoult.highlevel.managers import fetch_manager
    manager = fetch_manager("pymoult-dask")
    current = manager.status().current if manager is not None else None
    return None if current is None else current.state
'''

V2 = V1.replace('("v1"', '("v2"').replace('f"v1:', 'f"v2:')

MODULES = ["jobs_stream", "jobs_held", "jobs_straggler", "jobs_fail", "jobs_trial",
           "jobs_input", "jobs_steps", "jobs_continue", "jobs_command", "jobs_waves",
           "jobs_halt", "jobs_halt_command"]


@pytest.fixture(scope="module")
def dask(tmp_path_factory):
    """``(cluster, client)``: the cluster every test of the file shares, its workers able to
    import the modules of ``MODULES`` (version 1), which this process has imported too."""
    directory = tmp_path_factory.mktemp("dask_modules")
    for name in MODULES:
        (directory / f"{name}.py").write_text(V1)
    sys.path.insert(0, str(directory))
    cluster = distributed.LocalCluster(n_workers=3, processes=True, threads_per_worker=2,
                                       dashboard_address="127.0.0.1:0")
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(3, timeout=WAIT)
        yield cluster, client
    finally:
        client.close()
        cluster.close()
        sys.path.remove(str(directory))
        for name in MODULES:
            sys.modules.pop(name, None)


def applied_there(name):
    """Whether an update ``name`` and its revert count as applied in this process."""
    from pymoult.highlevel.updates import isApplied
    return [isApplied(name), isApplied(f"revert {name}")]


def workers(client):
    return cluster_workers(client)


def versions_on(client, module, where):
    """``{worker: version string}`` of ``module.work`` run on each of ``where``."""
    futures = {worker: client.submit(module.work, worker, pure=False, workers=[worker],
                                     allow_other_workers=False) for worker in where}
    return {worker: future.result(timeout=WAIT)[0] for worker, future in futures.items()}


def import_module(name):
    return __import__(name)


class TaskStream:
    """Keeps ``in_flight`` tasks of ``module.work`` submitted (one more as each ends) from a
    thread of its own until :meth:`stop`; :meth:`wait_ended` waits for tasks to end."""

    def __init__(self, client, module, in_flight=24):
        self.client, self.module, self.in_flight = client, module, in_flight
        self.submitted = []  # (time submitted, future)
        self.ended = {}  # key -> time it was seen ended
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="task stream", daemon=True)
        self.error = None

    def start(self):
        self.thread.start()
        return self

    def _submit(self, pending):
        future = self.client.submit(self.module.work, len(self.submitted), pure=False)
        self.submitted.append((time.monotonic(), future))
        pending.add(future)

    def _run(self):
        try:
            pending = distributed.as_completed()
            for _ in range(self.in_flight):
                self._submit(pending)
            for future in pending:
                with self.changed:
                    self.ended[future.key] = time.monotonic()
                    self.changed.notify_all()
                if not self.stopping.is_set():
                    self._submit(pending)
        except BaseException as exc:  # reported by the test
            with self.changed:
                self.error = exc
                self.changed.notify_all()

    def wait_ended(self, count):
        """Wait until ``count`` more tasks have ended than when called."""
        with self.changed:
            target = len(self.ended) + count
            assert self.changed.wait_for(
                lambda: len(self.ended) >= target or self.error is not None, WAIT), \
                "the task stream stalled"
        assert self.error is None, self.error

    def stop(self):
        self.stopping.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


@pytest.mark.timeout(180)
def test_a_cluster_holding_data_is_updated_live_while_tasks_run_and_undone(dask):
    cluster, client = dask
    jobs = import_module("jobs_stream")
    data = client.map(jobs.make, range(24), pure=False)
    distributed.wait(data, timeout=WAIT)
    holders = client.who_has(data)
    tokens = client.gather(client.map(jobs.token_of, data, pure=False))
    assert sum(client.run(jobs.made).values()) == 24
    before = workers(client)
    assert set(versions_on(client, jobs, before).values()) == {"v1"}

    stream = TaskStream(client, jobs).start()
    stream.wait_ended(40)  # the stream runs
    update_began = time.monotonic()
    report = update_cluster(client, "jobs_stream", V2, filename="jobs_stream_v2.py")
    update_ended = time.monotonic()
    stream.wait_ended(80)  # 80 more ended: at least 56 submitted after the update returned
    stream.stop()

    assert report.ok, str(report)
    assert set(report.switch_times()) == set(before) | {SCHEDULER}
    assert report.skew is not None and report.skew >= 0
    assert [r.step for r in report.results].count("apply") == len(before) + 1

    # every task ended well; those submitted after the update returned ran the new version
    results = {future.key: (submitted, future) for submitted, future in stream.submitted}
    assert [f.status for _, f in results.values()].count("finished") == len(results)
    after = [future.result()[0] for submitted, future in results.values()
             if submitted > update_ended]
    assert len(after) >= 50 and set(after) == {"v2"}
    # on each worker, the tasks ran up to its switch and from it on, never across it: a task
    # of the old version ended before the switch (the clocks are this machine's)
    pids = client.run(os.getpid)
    switched = report.switch_times()
    for worker in before:
        ran = [future.result() for _, future in results.values()
               if future.result()[2] == pids[worker]]
        old = [(began, ended) for version, _, _, began, ended in ran if version == "v1"]
        new = [(began, ended) for version, _, _, began, ended in ran if version == "v2"]
        assert old and new, f"the stream did not run on {worker} on both sides of its switch"
        assert max(ended for _, ended in old) < switched[worker]
        assert min(ended for _, ended in new) > switched[worker]
    assert update_began < update_ended

    # the data stayed in memory, where it was, not recomputed; its objects run the new methods
    assert client.who_has(data) == holders
    assert client.gather(client.map(jobs.token_of, data, pure=False)) == tokens
    assert sum(client.run(jobs.made).values()) == 24
    assert client.gather(client.map(jobs.label_of, data, pure=False)) == \
        [f"v2:{i}" for i in range(24)]

    # a worker that joins afterwards runs the new version before its first task
    cluster.scale(len(before) + 1)
    client.wait_for_workers(len(before) + 1, timeout=WAIT)
    (joined,) = set(workers(client)) - set(before)
    assert versions_on(client, jobs, [joined]) == {joined: "v2"}
    assert cluster_versions(client)[joined] == {"jobs_stream": [report.version]}

    # the undo brings every process back, the joined worker too; the data is still there
    undone = undo_cluster(client, "jobs_stream")
    assert undone.ok, str(undone)
    everyone = workers(client)
    assert set(versions_on(client, jobs, everyone).values()) == {"v1"}
    assert jobs.work(0)[0] == "v1"  # this process: the scheduler's
    assert client.gather(client.map(jobs.label_of, data, pure=False)) == \
        [f"v1:{i}" for i in range(24)]
    assert client.gather(client.map(jobs.token_of, data, pure=False)) == tokens
    assert sum(client.run(jobs.made).values()) == 24
    assert all(versions.get("jobs_stream", []) == []
               for versions in cluster_versions(client).values())


def hold_a_task(client, jobs, worker):
    """A task of ``jobs.held`` running on ``worker``, inside the changed function until
    ``release.set()``: ``(future, release)``."""
    started = distributed.Event(f"started-{uuid.uuid4().hex}")
    release = distributed.Event(f"release-{uuid.uuid4().hex}")
    future = client.submit(jobs.held, 1, started.name, release.name, pure=False,
                           workers=[worker], allow_other_workers=False)
    assert started.wait(WAIT)
    return future, release


def test_a_task_running_a_changed_function_finishes_on_its_version(dask):
    cluster, client = dask
    jobs = import_module("jobs_held")
    worker = workers(client)[0]
    held, release = hold_a_task(client, jobs, worker)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            updating = pool.submit(update_cluster, client, "jobs_held", V2, timeout=WAIT)
            deadline = time.monotonic() + WAIT
            while client.run(jobs.update_state, workers=[worker])[worker] != \
                    "waiting for alterability":
                assert time.monotonic() < deadline and not updating.done(), \
                    "the update did not wait for the task"
                threading.Event().wait(0.02)
            assert not updating.done()
        finally:
            release.set()
        report = updating.result(WAIT)
    assert report.ok, str(report)
    assert held.result(WAIT) == ("v1", 1)  # it finished on the version it started on
    assert set(versions_on(client, jobs, workers(client)).values()) == {"v2"}
    assert undo_cluster(client, "jobs_held").ok


def test_with_running_tasks_continuing_the_switch_does_not_wait_for_a_long_task(dask):
    cluster, client = dask
    jobs = import_module("jobs_continue")
    worker = workers(client)[0]
    held, release = hold_a_task(client, jobs, worker)
    try:
        report = update_cluster(client, "jobs_continue", V2, running_tasks="continue",
                                timeout=WAIT)
        assert report.ok, str(report)
        assert not held.done()  # switched while the task runs the function it changed
        assert versions_on(client, jobs, workers(client)) == {
            worker: "v2" for worker in workers(client)}
    finally:
        release.set()
    assert held.result(WAIT) == ("v1", 1)  # its call finished on the code it started with
    assert undo_cluster(client, "jobs_continue").ok
    with pytest.raises(PymoultValueError, match="running_tasks must be one of wait, continue"):
        update_cluster(client, "jobs_continue", V2, running_tasks="later")


def test_a_worker_that_cannot_switch_in_time_leaves_the_cluster_on_the_old_version(dask):
    cluster, client = dask
    jobs = import_module("jobs_straggler")
    everyone = workers(client)
    straggler = everyone[-1]
    held, release = hold_a_task(client, jobs, straggler)
    try:
        report = update_cluster(client, "jobs_straggler", V2, timeout=1.0)
    finally:
        release.set()
    assert not report.ok and report.fleet.version == "old"
    assert report.summary.endswith("the fleet stays on the old version "
                                   f"({len(everyone) + 1} processes)")
    (failed,) = report.failed
    assert failed.worker == straggler and failed.step == "apply"
    assert "UpdateTimeoutError" in failed.message and "held" in failed.message
    assert "\n" not in failed.message and "Traceback" not in failed.message
    undone = [r.worker for r in report.results if r.step == "undo" and r.ok]
    assert set(undone) == (set(everyone) - {straggler}) | {SCHEDULER}
    assert {p.address: p.outcome for p in report.processes} == {
        target: "failed" if target == straggler else "rolled back"
        for target in everyone + [SCHEDULER]}
    assert held.result(WAIT) == ("v1", 1)
    assert set(versions_on(client, jobs, workers(client)).values()) == {"v1"}
    assert jobs.work(0)[0] == "v1"
    assert all(v.get("jobs_straggler", []) == [] for v in cluster_versions(client).values())


def test_an_update_failing_on_one_worker_is_rolled_back_there_and_undone_elsewhere(dask):
    cluster, client = dask
    jobs = import_module("jobs_fail")
    everyone = workers(client)
    odd = everyone[1]
    data = client.map(jobs.make, range(6), pure=False)
    bad = client.submit(jobs.make_bad, 99, pure=False, workers=[odd], allow_other_workers=False)
    distributed.wait(data + [bad], timeout=WAIT)
    report = update_cluster(client, "jobs_fail", V2, transformers={"Record": jobs.upgrade})
    assert not report.ok
    (failed,) = report.failed
    assert failed.worker == odd and failed.step == "apply"
    assert failed.message.startswith("failed and rolled back, nothing changed:")
    assert "record 99 cannot be upgraded" in failed.message
    assert "\n" not in failed.message and "Traceback" not in failed.message
    assert {r.worker for r in report.results if r.step == "undo" and r.ok} == \
        (set(everyone) - {odd}) | {SCHEDULER}
    assert set(versions_on(client, jobs, everyone).values()) == {"v1"}
    assert client.gather(client.map(jobs.label_of, data, pure=False)) == \
        [f"v1:{i}" for i in range(6)]
    assert sum(client.run(jobs.made).values()) == 7


def test_the_steps_run_on_the_workers_given_and_converge_takes_back_what_is_unpublished(dask):
    cluster, client = dask
    jobs = import_module("jobs_steps")
    update = ClusterUpdate(client, "jobs_steps", V2, scheduler=False)
    everyone = workers(client)
    canary, rest = everyone[:1], everyone[1:]
    assert update.targets() == everyone
    prepared = update.prepare(everyone)
    assert [r.worker for r in prepared] == everyone and all(r.ok for r in prepared)
    assert all(r.message.startswith("ready (imported first): ") for r in prepared)
    (applied,) = update.apply(canary)
    assert applied.ok and applied.worker == canary[0] and applied.switched_at is not None
    assert versions_on(client, jobs, everyone) == {
        worker: "v2" if worker in canary else "v1" for worker in everyone}
    # a halt without an explicit undo: nothing was published, so converging takes it back
    converged = update.converge()
    assert {r.worker for r in converged} == set(everyone) and all(r.ok for r in converged)
    assert set(versions_on(client, jobs, everyone).values()) == {"v1"}
    assert all(v.get("jobs_steps", []) == [] for v in cluster_versions(client).values())
    assert [r.message for r in update.discard(rest)] == ["dropped"] * len(rest)
    assert [r.message for r in update.apply(rest)] == [
        "not prepared here (never, or dropped since): prepare it again"] * len(rest)
    assert set(versions_on(client, jobs, everyone).values()) == {"v1"}


def test_a_canary_then_waves_switch_stage_by_stage_with_one_line_per_target(dask):
    cluster, client = dask
    jobs = import_module("jobs_waves")
    everyone = workers(client)
    seen = []

    def on_stage(stage, reports):  # each stage has ended before the next begins
        seen.append((stage, [r.address for r in reports]))
        versions = versions_on(client, jobs, everyone)
        done = {address for _, addresses in seen for address in addresses}
        assert versions == {w: "v2" if w in done else "v1" for w in everyone}, stage

    report = update_cluster(client, "jobs_waves", V2, canary=1, wave=2, on_stage=on_stage)
    assert report.ok and report.fleet.version == "new", str(report)
    targets = everyone + [SCHEDULER]
    expected = [("canary", targets[:1])] + [
        (f"wave {n}", targets[i:i + 2]) for n, i in enumerate(range(1, len(targets), 2), 1)]
    assert seen == expected
    assert [(p.address, p.stage, p.outcome, p.version) for p in report.processes] == [
        (address, stage, "applied", "new") for stage, addresses in expected
        for address in addresses]
    assert {p.address: p.applied_at for p in report.processes} == report.switch_times()
    lines = str(report).splitlines()
    assert len(lines) == len(targets) + 1
    assert lines[0].startswith(f"{targets[0]}  canary: applied - applied in ")
    assert lines[-1] == f"update {report.version}: all {len(targets)} processes updated"
    assert set(versions_on(client, jobs, everyone).values()) == {"v2"}
    assert undo_cluster(client, "jobs_waves").ok
    assert set(versions_on(client, jobs, everyone).values()) == {"v1"}
    with pytest.raises(PymoultValueError, match=r"^wave must be an int, at least 1"):
        update_cluster(client, "jobs_waves", V2, wave=0)
    with pytest.raises(PymoultValueError, match=r"^canary must be an int, at least 0"):
        update_cluster(client, "jobs_waves", V2, canary=-1)


def test_a_failure_on_the_second_worker_halts_and_rolls_the_canary_back(dask):
    cluster, client = dask
    jobs = import_module("jobs_halt")
    everyone = workers(client)
    canary, second, later = everyone[0], everyone[1], everyone[2:] + [SCHEDULER]
    data = client.map(jobs.make, range(6), pure=False)
    bad = client.submit(jobs.make_bad, 99, pure=False, workers=[second],
                        allow_other_workers=False)
    distributed.wait(data + [bad], timeout=WAIT)
    tokens = client.gather(client.map(jobs.token_of, data, pure=False))
    stages = []
    report = update_cluster(client, "jobs_halt", V2, transformers={"Record": jobs.upgrade},
                            canary=1, wave=1,
                            on_stage=lambda stage, reports: stages.append(stage))
    assert stages == ["canary", "wave 1"]  # halted: no later wave tried
    assert not report.ok and report.fleet.version == "old"
    assert report.fleet.halted_at == second
    outcome = {p.address: (p.stage, p.outcome, p.version) for p in report.processes}
    assert outcome == {canary: ("canary", "rolled back", "old"),
                       second: ("wave 1", "failed", "old"),
                       **{target: ("not tried", "not tried", "old") for target in later}}
    # (then the published versions registered again: "publish" on every worker)
    assert [r.step for r in report.results if r.worker == canary] == \
        ["prepare", "apply", "undo", "publish"]
    assert not [r for r in report.results if r.worker in later and r.step != "prepare"
                and r.step != "publish"]
    lines = str(report).splitlines()
    assert lines[0].startswith(f"{canary}  canary: rolled back - applied in ")
    assert "; undone: reverted to the version before it in " in lines[0]
    assert lines[1].startswith(f"{second}  wave 1: failed - failed and rolled back, nothing "
                               "changed: ")
    assert "record 99 cannot be upgraded" in lines[1]
    assert lines[-1] == (f"update {report.version}: halted at {second}; 1 process rolled "
                         f"back; the fleet stays on the old version ({len(everyone) + 1} "
                         "processes)")
    assert "Traceback" not in str(report)
    # every process on the old version, the data where it was and on the old methods
    assert set(versions_on(client, jobs, everyone).values()) == {"v1"}
    assert jobs.work(0)[0] == "v1"
    assert client.gather(client.map(jobs.token_of, data, pure=False)) == tokens
    assert client.gather(client.map(jobs.label_of, data, pure=False)) == \
        [f"v1:{i}" for i in range(6)]
    assert all(v.get("jobs_halt", []) == [] for v in cluster_versions(client).values())
    # the canary's update was reverted through the lifecycle (a RevertUpdate), which no longer
    # counts it applied there, and counts its revert
    name = f"cluster update {report.version}"
    assert client.run(applied_there, name, workers=[canary]) == {canary: [False, True]}


def test_pymoult_push_dask_with_a_canary_halts_at_a_worker_that_cannot_switch(dask, tmp_path):
    cluster, client = dask
    jobs = import_module("jobs_halt_command")
    everyone = workers(client)
    canary, second = everyone[0], everyone[1]
    new = tmp_path / "jobs_halt_command_v2.py"
    new.write_text(V2)
    held, release = hold_a_task(client, jobs, second)
    try:
        pushed = subprocess.run([sys.executable, "-m", "pymoult", "push", "--dask",
                                 cluster.scheduler_address, "--module", "jobs_halt_command",
                                 str(new), "--canary", "1", "--wave", "2", "--timeout", "2"],
                                capture_output=True, text=True, env=command_env(), timeout=120)
    finally:
        release.set()
    assert pushed.returncode == 1, pushed.stdout + pushed.stderr
    assert "Traceback" not in pushed.stdout + pushed.stderr
    lines = pushed.stdout.splitlines()
    third, later = everyone[2], everyone[3:] + [SCHEDULER]
    # as each stage ends, its lines; then the targets rolled back and those not tried
    assert lines[0].startswith(f"{canary}  canary: applied - applied in ")
    assert lines[1].startswith(f"{second}  wave 1: failed - ")
    assert "UpdateTimeoutError" in lines[1] and "held" in lines[1]
    assert lines[2].startswith(f"{third}  wave 1: applied - applied in ")
    assert lines[3].startswith(f"{canary}  canary: rolled back - applied in ")
    assert lines[4].startswith(f"{third}  wave 1: rolled back - applied in ")
    assert all("; undone: reverted to the version before it in " in line
               for line in lines[3:5])
    assert lines[5:-1] == [f"{target}  not tried: not tried - ready, then dropped"
                           for target in later]
    assert lines[-1].startswith("update jobs_halt_command@")
    assert lines[-1].endswith(f": halted at {second}; 2 processes rolled back; the fleet stays "
                              f"on the old version ({len(everyone) + 1} processes)")
    assert held.result(WAIT) == ("v1", 1)
    assert set(versions_on(client, jobs, everyone).values()) == {"v1"}
    assert all(v.get("jobs_halt_command", []) == [] for v in cluster_versions(client).values())


def test_a_new_version_failing_on_trial_on_the_workers_changes_nothing(dask):
    cluster, client = dask
    jobs = import_module("jobs_trial")
    broken = V2 + "\nimport a_module_the_workers_do_not_have\n"
    report = update_cluster(client, "jobs_trial", broken)
    assert not report.ok
    assert report.summary.startswith("not applied: the new version failed on")
    assert "nothing changed" in report.summary
    prepares = [r for r in report.results if r.step == "prepare"]
    assert prepares and not any(r.ok for r in prepares)
    for result in prepares:
        assert result.message.startswith("ModuleUpdateError:"), result.message
        assert "a_module_the_workers_do_not_have" in result.message
        assert "\n" not in result.message
    assert not [r for r in report.results if r.step == "apply"]
    assert set(versions_on(client, jobs, workers(client)).values()) == {"v1"}
    assert all(v.get("jobs_trial", []) == [] for v in cluster_versions(client).values())


def test_pymoult_push_dask_updates_every_worker_from_the_command_line(dask, tmp_path):
    cluster, client = dask
    jobs = import_module("jobs_command")
    new = tmp_path / "jobs_command_v2.py"
    new.write_text(V2)
    pushed = subprocess.run([sys.executable, "-m", "pymoult", "push", "--dask",
                             cluster.scheduler_address, "--module", "jobs_command", str(new),
                             "--timeout", "60"], capture_output=True, text=True,
                            env=command_env(), timeout=120)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "Traceback" not in pushed.stdout + pushed.stderr
    lines = pushed.stdout.splitlines()  # one line per target as its wave ends, the summary
    targets = workers(client) + [SCHEDULER]
    assert [line.split("  ", 1)[0] for line in lines[:-1]] == targets
    assert all("  wave 1: applied - applied in " in line for line in lines[:-1])
    assert lines[-1].startswith("update jobs_command@")
    assert f": all {len(targets)} processes updated, switched within " in lines[-1]
    assert set(versions_on(client, jobs, workers(client)).values()) == {"v2"}
    wrong = subprocess.run([sys.executable, "-m", "pymoult", "push", "--dask",
                            cluster.scheduler_address, "-"], input="x = 1\n",
                           capture_output=True, text=True, env=command_env(), timeout=60)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == ("pymoult: push --dask: give one --module NAME FILE (the "
                                    "module's new version)")
    listeners = subprocess.run([sys.executable, "-m", "pymoult", "push", "--dask",
                                cluster.scheduler_address, "--module", "jobs_command", str(new),
                                "--two-phase"], capture_output=True, text=True,
                               env=command_env(), timeout=60)
    assert listeners.returncode == 2
    assert listeners.stderr.strip() == (
        "pymoult: push --dask: --to, --to-file, --two-phase and --hold are for listeners; a "
        "Dask cluster is reached through its scheduler (its prepare phase is always first)")


def test_bad_input_is_refused_in_one_sentence_before_anything_changes(dask):
    cluster, client = dask
    jobs = import_module("jobs_input")
    with pytest.raises(ModuleUpdateError) as error:
        update_cluster(client, "jobs_input", V2 + "\ndef broken(:\n", filename="jobs_v2.py")
    assert str(error.value).startswith("the new version of 'jobs_input' does not compile:")
    assert "jobs_v2.py, line" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(PymoultValueError, match="no process of the cluster has module "
                                                "'jobs_nowhere'.*cannot be imported"):
        update_cluster(client, "jobs_nowhere", V2)
    with pytest.raises(PymoultTypeError, match="expected a distributed.Client"):
        update_cluster("tcp://127.0.0.1:8786", "jobs_input", V2)
    with pytest.raises(PymoultTypeError, match="source= or path="):
        ClusterUpdate(client, "jobs_input")
    with pytest.raises(PymoultValueError, match="no version of 'jobs_input' is published"):
        undo_cluster(client, "jobs_input")
    closed = distributed.Client(cluster, set_as_default=False)
    closed.close()
    with pytest.raises(PymoultValueError, match="the Dask client is not connected"):
        update_cluster(closed, "jobs_input", V2)
    assert set(versions_on(client, jobs, workers(client)).values()) == {"v1"}


def test_the_example_updates_its_cluster_live_under_pymoult_demo():
    process = subprocess.Popen([sys.executable, "-m", "pymoult", "demo", "task_cluster"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=command_env(), start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=100)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the application and its workers too
        process.communicate()
        raise
    assert process.returncode == 0, stdout + stderr
    rounds = [line.split(" | ", 1)[1] for line in stdout.splitlines()
              if line.lstrip().startswith("app | round ")]
    assert "app | update_cluster: all 3 processes updated, switched within " in stdout, stdout
    # (a round in progress when the update lands is printed after it, on the old version)
    old = [line for line in rounds if "(mean, jobs v1)" in line]
    new = [line for line in rounds if "(median, jobs v2)" in line]
    assert rounds == old + new, rounds
    assert len(old) >= 3 and len(new) >= 2
    # the readings were loaded once, by the same two worker processes, and stayed in memory
    assert {line.split("; ", 1)[1] for line in rounds} == {old[0].split("; ", 1)[1]}
    assert "8 readings in memory, loaded 8 times" in old[0]


def test_every_public_name_of_the_module_is_documented():
    from pymoult.delivery import dask_cluster

    assert dask_cluster.__doc__
    for name in dask_cluster.__all__:
        value = getattr(dask_cluster, name)
        if callable(value):
            assert value.__doc__, name
