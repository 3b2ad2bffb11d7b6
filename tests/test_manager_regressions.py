"""Regressions for manager bugs found in review, one test each."""

import sys
import threading

import pytest

from pymoult.errors import ThreadStateError, UpdateAbortedError, UpdateDefinitionError
from pymoult.highlevel.managers import Manager, ThreadedManager
from pymoult.highlevel.updates import Update, UpdateState
from pymoult.lowlevel.world import stop_the_world
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(30)
WAIT = 10.0


class Flag(Update):
    def apply(self):
        pass


@pytest.fixture
def odd_interval():
    """A switch interval that is not a whole number of microseconds once stored."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(0.0037)
    value = sys.getswitchinterval()
    yield value
    sys.setswitchinterval(saved)


def test_switch_interval_is_restored_exactly(odd_interval):
    manager = ThreadedManager().start()
    manager.apply_update(Flag(), timeout=WAIT)
    assert manager.wait_current_update(WAIT)
    assert manager.stop(WAIT)
    assert sys.getswitchinterval() == odd_interval
    for _ in range(20):
        with stop_the_world():
            pass
    assert sys.getswitchinterval() == odd_interval  # no microsecond lost per window
    unstarted = ThreadedManager()
    unstarted.add_update(Flag())
    assert unstarted.stop(WAIT)
    assert sys.getswitchinterval() == odd_interval


def test_stop_resolves_a_postponed_update():
    manager = ThreadedManager().start()
    postponed = threading.Event()

    class Later(Flag):
        def check_requirements(self):
            postponed.set()
            return "no"

    future = manager.add_update(Later(sleep_time=1))
    assert postponed.wait(WAIT)
    assert manager.stop(WAIT)
    with pytest.raises(UpdateAbortedError, match="still postponed when the manager stopped"):
        future.result(WAIT)


def test_abort_of_a_waiting_threaded_update_keeps_the_manager_alive(spawn):
    manager = ThreadedManager().start()
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))  # never at a point
    waiting = threading.Event()

    class Waiting(Flag):
        def wait_alterability(self):
            waiting.set()
            return super().wait_alterability()

    update = Waiting(threads=[thread], max_tries=20, sleep_time=0.01)
    future = manager.add_update(update)
    assert waiting.wait(WAIT)
    assert manager.abort()
    assert future.exception(WAIT) is not None
    assert manager.apply_update(Flag(), timeout=WAIT)  # still serving
    assert manager.stop(WAIT)


def test_a_failing_pause_hook_rolls_back_and_releases(point_looper):
    thread = point_looper()

    class BadHook(Flag):
        def pause_hook(self):
            raise OSError("hook failed")

    manager = ThreadedManager().start()
    with pytest.raises(OSError, match="hook failed"):
        manager.apply_update(BadHook(threads=[thread]), timeout=WAIT)
    assert not thread.is_suspended()
    assert manager.stop(WAIT)


def test_a_raising_step_of_a_polling_manager_resolves_the_future(point_looper):
    thread = point_looper()

    class Exploding(Flag):
        def check_alterability(self):
            super().check_alterability()  # asks the thread to park
            raise LookupError("alterability check exploded")

    manager = Manager()
    update = Exploding(threads=[thread])
    future = manager.add_update(update)
    for _ in range(3):
        manager.apply_next_update()
    with pytest.raises(LookupError):
        future.result(0)
    assert update.state is UpdateState.FAILED and thread.resume() is False


def test_requirement_cycles_are_refused():
    manager = Manager()
    a, b = Flag(name="a"), Flag(name="b")
    manager.add_update(a, requires=[b])
    with pytest.raises(UpdateDefinitionError, match="'b' would require itself"):
        manager.add_update(b, requires=[a])


def test_no_false_deadlock_between_two_polling_managers():
    first, second = Manager(), Manager()
    first.add_update(Flag())
    first.apply_next_update()  # first is mid-update, between two steps
    assert second.apply_update(Flag(), timeout=WAIT).state is UpdateState.APPLIED


def test_apply_update_on_an_unstarted_manager_queues_nothing():
    manager = ThreadedManager()
    with pytest.raises(ThreadStateError, match="is not started"):
        manager.apply_update(Flag(), timeout=1)
    assert manager.pending() == []
