"""The wake-up hand-off: update points make way for a manager thread being woken."""

import threading

import pytest

from pymoult import _parking
from pymoult.highlevel.managers import ThreadedManager
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.alterability import staticUpdatePoint

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


class Flag(Update):
    def apply(self):
        pass


def _point_in_thread(spawn):
    """A thread that passes one update point; returns the Event it sets afterwards."""
    passed = threading.Event()

    def run():
        staticUpdatePoint()
        passed.set()

    spawn(threading.Thread(target=run))
    return passed


def test_points_wait_while_a_handoff_is_open_and_pass_once_it_closes(spawn):
    handoff = _parking.open_handoff(WAIT * 2)
    try:
        assert _parking._pending
        passed = _point_in_thread(spawn)
        assert not passed.wait(0.05)  # held at the point (it would pass in microseconds)
    finally:
        handoff.close()
    assert passed.wait(WAIT)
    assert _parking._handoff is None and not _parking._pending


def test_a_point_waits_no_longer_than_the_handoffs_bound(spawn):
    handoff = _parking.open_handoff(0.01)  # never closed while the point waits
    try:
        assert _point_in_thread(spawn).wait(WAIT)
    finally:
        handoff.close()
    assert not _parking._pending


def test_a_threaded_manager_closes_its_handoff(point_looper):
    thread = point_looper()
    manager = ThreadedManager(threads=[thread]).start()
    try:
        for _ in range(20):
            assert manager.apply_update(Flag(), timeout=WAIT)
        assert manager.wait_current_update(WAIT)
        assert _parking._handoff is None and manager._handoff is None
    finally:
        assert manager.stop(WAIT)
    assert not _parking._pending


@pytest.mark.parametrize("wake_handoff", [0.002, None])
def test_an_update_added_to_an_idle_manager_opens_a_handoff_unless_disabled(monkeypatch,
                                                                            wake_handoff):
    import pymoult.highlevel.managers as managers

    opened = []
    monkeypatch.setattr(managers, "open_handoff",
                        lambda wait: opened.append(wait) or _parking.open_handoff(wait))
    manager = ThreadedManager()
    manager.wake_handoff = wake_handoff
    manager.start()
    try:
        assert manager.apply_update(Flag(), timeout=WAIT)
        assert manager.wait_current_update(WAIT)  # set by its thread, which holds the lock
        with manager._lock:  # from then until it waits: so now it is asleep
            assert manager._asleep
        opened.clear()
        assert manager.apply_update(Flag(), timeout=WAIT)
    finally:
        assert manager.stop(WAIT)
    assert opened == ([] if wake_handoff is None else [wake_handoff])
    assert _parking._handoff is None
