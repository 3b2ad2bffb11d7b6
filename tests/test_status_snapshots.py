"""Managers and updates describe themselves as frozen snapshots (``Manager.status()``,
``Update.status()``), which is all the listener reads of them; the delivery tier keeps the
original's import paths."""

import dataclasses
import json
import threading

import pytest

from listening import WAIT
from pymoult import client
from pymoult.delivery import Listener
from pymoult.highlevel.managers import Manager, ManagerStatus, QueuedUpdate
from pymoult.highlevel.updates import Update, UpdateStatus
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(30)


class Noop(Update):
    def apply(self):
        pass


def test_a_manager_status_is_a_frozen_snapshot_of_its_queue():
    manager = Manager("snapshot queue")
    first, second = Noop("first"), Noop("second")
    manager.add_update(first)
    manager.add_update(second, priority=-1)  # runs first
    before = manager.status()
    assert before == ManagerStatus(
        name="snapshot queue", kind="Manager", current=None,
        pending=(QueuedUpdate("second", "pending"), QueuedUpdate("first", "pending")),
        statistics=before.statistics)
    assert before.statistics["queued"] == 2 and before.statistics["finished"] == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.pending = ()
    with pytest.raises(TypeError):
        before.statistics["queued"] = 0
    for _ in range(50):
        if manager.statistics()["finished"].get("applied") == 2:
            break
        manager.apply_next_update()
    after = manager.status()
    assert after.pending == () and after.statistics["finished"] == {"applied": 2}
    # the earlier snapshot did not follow the manager
    assert [q.name for q in before.pending] == ["second", "first"]
    assert before.statistics["finished"] == {}
    assert json.loads(json.dumps(after.as_dict())) == {
        "name": "snapshot queue", "kind": "Manager", "current": None, "pending": [],
        "statistics": dict(after.statistics)}


class Patient(Update):
    """Waits at update points only, and says when it first waits."""

    suspension, on_timeout = "points", "fail"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waiting = threading.Event()

    def check_alterability(self):
        self.waiting.set()
        return super().check_alterability()

    def apply(self):
        pass


def test_an_update_status_is_taken_once_and_does_not_follow_the_update(spawn):
    never = spawn(DSU_Thread(target=spawn.stop.wait, args=(WAIT,)))  # never at a point
    update = Patient("patient", threads=[never], max_tries=50, sleep_time=0.01)
    manager = Manager("snapshot update")
    manager.add_update(update)
    for _ in range(50):
        if update.tries >= 2:
            break
        manager.apply_next_update()
    update.journal.report_progress("convert", 10, 100)
    status = manager.status().current
    assert isinstance(status, UpdateStatus)
    assert (status.name, status.state, status.max_tries) == (
        "patient", "waiting for alterability", 50)
    assert status.tries == update.tries >= 2 and status.patience == 50 * 0.01
    assert isinstance(status.waited, float) and status.waited >= 0
    assert dict(status.progress) == {"step": "convert", "done": 10, "total": 100}
    tries = status.tries
    manager.apply_next_update()
    update.journal.report_progress("convert", 20, 100)
    assert status.tries == tries and status.progress["done"] == 10  # a snapshot
    with pytest.raises(TypeError):
        status.progress["done"] = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.tries = 0
    assert json.loads(json.dumps(status.as_dict()))["progress"] == {
        "step": "convert", "done": 10, "total": 100}
    manager.abort()
    assert manager.status().current is None


class Described(Manager):
    """A manager whose snapshot is made up: what the listener reports must be exactly it."""

    def status(self):
        return ManagerStatus(
            name="made up", kind="Imaginary",
            current=UpdateStatus(name="u", state="applying", tries=3, max_tries=7,
                                 postponements=1, waited=None, patience=0.7,
                                 progress=None),
            pending=(QueuedUpdate("next", "pending"),), statistics={"queued": 1})


def test_the_listener_reports_the_managers_snapshots_and_nothing_else():
    manager = Described("described")
    with Listener(manager=manager) as listener:
        [reported] = client.status(listener.address, timeout=WAIT)["managers"]
    assert reported == {
        "name": "made up", "kind": "Imaginary",
        "current": {"name": "u", "state": "applying", "tries": 3, "max_tries": 7,
                    "postponements": 1, "waited": None, "patience": 0.7, "progress": None},
        "pending": [{"name": "next", "state": "pending"}], "statistics": {"queued": 1}}


def test_the_original_import_paths_give_the_delivery_tier_objects():
    from pymoult import delivery, logs
    from pymoult.highlevel import listener

    for name in ("Listener", "PipeListener", "get_app_listener", "run_script",
                 "running_scripts"):
        assert getattr(listener, name) is getattr(delivery, name)
    for name in ("log", "set_loglevel", "set_logpath", "LOG_LEVELS", "LOG_FILE_FORMAT"):
        assert getattr(listener, name) is getattr(logs, name)
