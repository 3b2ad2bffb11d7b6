import sys
import threading
import types

import pytest

from pymoult.errors import (DeadlockDetectedError, ThreadStateError, UpdateAbortedError,
                            UpdateTimeoutError)
from pymoult.highlevel.managers import Manager, ThreadedManager
from pymoult.highlevel.updates import Update, UpdateState, isApplied
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.data_access import startEagerUpdate
from pymoult.lowlevel.data_update import redefineClass
from pymoult.lowlevel.relinking import redefineFunction
from pymoult.lowlevel.world import stop_the_world
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(30)
WAIT = 10.0


class Flag(Update):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.applied_in = None

    def apply(self):
        self.applied_in = threading.current_thread()


def module(name, source):
    result = types.ModuleType(name)
    exec(source, result.__dict__)
    return result


def test_updates_are_applied_by_the_manager_thread(manager):
    update = Flag()
    assert manager.apply_update(update, timeout=WAIT) is update
    assert update.applied_in is manager._thread and isApplied(update)
    assert manager.wait_current_update(WAIT)


def test_static_point_update_of_a_live_thread_has_no_torn_call(manager, spawn):
    app = module("codec", "def encode(x):\n    return x + 1\ndef decode(y):\n    return y - 1\n")
    new = module("codec_v2", "def encode(x):\n    return 3 * x + 1\n"
                             "def decode(y):\n    return (y - 1) // 3\n")
    calls, torn = [0], []
    started = threading.Event()
    progressed = threading.Event()

    def worker():
        started.set()
        x = 0
        while not spawn.stop.is_set():
            x += 1
            if app.decode(app.encode(x)) != x:
                torn.append(x)
            calls[0] += 1
            progressed.set()
            staticUpdatePoint()

    thread = spawn(DSU_Thread(target=worker))
    assert started.wait(WAIT)

    class Codec(Update):
        def apply(self):
            redefineFunction(app, "encode", new.encode)
            redefineFunction(app, "decode", new.decode)

    manager.apply_update(Codec(threads=[thread]), timeout=WAIT)
    before = calls[0]
    progressed.clear()
    assert progressed.wait(WAIT)  # it ran on with the new pair
    assert app.encode(2) == 7 and torn == []
    assert calls[0] > before


def test_requirements_no_backs_off_then_applies(manager):
    answers = ["no", "no", "yes"]

    class Later(Flag):
        def check_requirements(self):
            return answers.pop(0)

    update = Later(sleep_time=0.001)
    assert manager.apply_update(update, timeout=WAIT) is update
    assert update.postponements == 2


def test_alterability_timeout(manager, spawn):
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))
    update = Flag(threads=[thread], max_tries=2, sleep_time=0.01)
    update.suspension, update.on_timeout = "points", "fail"
    with pytest.raises(UpdateTimeoutError, match="not alterable within its patience"):
        manager.apply_update(update, timeout=WAIT)
    assert update.state is UpdateState.FAILED and thread.resume() is False


def test_rollback_restores_functions_classes_and_objects(manager):
    app = module("rb_app", """
def price(x):
    return x
class Item:
    def __init__(self, n):
        self.n = n
    def show(self):
        return f"item {self.n}"
""")
    new = module("rb_app_v2", """
def price(x):
    return x * 100
class Item:
    def show(self):
        return f"ITEM {self.n} {self.cents}"
""")
    items = [app.Item(i) for i in range(5)]
    price = app.price

    class Big(Update):
        def apply(self):
            redefineFunction(app, "price", new.price)
            redefineClass(app, "Item", new.Item)
            startEagerUpdate(app.Item, lambda item: setattr(item, "cents", item.n * 100))
            raise ValueError("the last step failed")

    update = Big()
    with pytest.raises(ValueError, match="the last step failed"):
        manager.apply_update(update, timeout=WAIT)
    assert update.state is UpdateState.ROLLED_BACK
    assert price(3) == 3 and [i.show() for i in items] == [f"item {n}" for n in range(5)]
    assert not any(hasattr(i, "cents") for i in items)
    assert manager.apply_update(Flag(), timeout=WAIT)  # the manager went on


def test_deadlocks_are_refused_at_once(manager, spawn):
    errors = []

    class Nested(Update):
        def apply(self):
            try:
                manager.apply_update(Flag(), timeout=WAIT)
            except DeadlockDetectedError as exc:
                errors.append(exc)

    manager.apply_update(Nested(), timeout=WAIT)
    assert "called from 'ThreadedManager-" in str(errors[0]) and "own thread" in str(errors[0])

    result = []

    def worker():
        try:
            manager.apply_update(Flag(threads=[threading.current_thread()]), timeout=WAIT)
        except DeadlockDetectedError as exc:
            result.append(exc)

    spawn(DSU_Thread(target=worker)).join(WAIT)
    assert "it would wait for itself" in str(result[0])

    polling = Manager()

    class NestedPolling(Update):
        def apply(self):
            polling.apply_update(Flag(), timeout=WAIT)

    with pytest.raises(DeadlockDetectedError, match="inside another update's steps"):
        polling.apply_update(NestedPolling(), timeout=WAIT)


def test_stop_cancels_queued_updates_and_refuses_new_ones(spawn):
    manager = ThreadedManager().start()
    gate = threading.Event()
    entered = threading.Event()

    class Slow(Flag):
        def apply(self):
            entered.set()
            gate.wait(WAIT)

    running = manager.add_update(Slow())
    assert entered.wait(WAIT)
    queued = manager.add_update(Flag())
    stopper = spawn(threading.Thread(target=manager.stop, args=(WAIT,)))
    while not manager._stopping:  # stop() has emptied the queue once this is set
        stopper.join(0.001)
    gate.set()
    stopper.join(WAIT)
    assert running.result(WAIT) and queued.cancelled()
    with pytest.raises(ThreadStateError, match="is stopped"):
        manager.add_update(Flag())


def test_a_step_that_raises_does_not_end_the_manager(manager):
    class Broken(Flag):
        def check_requirements(self):
            raise KeyError("requirements exploded")

    with pytest.raises(KeyError):
        manager.apply_update(Broken(), timeout=WAIT)
    assert manager._thread.is_alive()
    assert manager.apply_update(Flag(), timeout=WAIT)


def test_apply_update_needs_a_started_manager():
    with pytest.raises(ThreadStateError, match="is not started"):
        ThreadedManager().apply_update(Flag(), timeout=1)


def test_requirements_order_updates_and_a_failed_requirement_aborts(manager):
    from pymoult.errors import UpdateAbortedError

    order = []

    class Named(Update):
        def apply(self):
            order.append(self.name)

    class Failing(Update):
        def apply(self):
            raise RuntimeError("no")

    gate = threading.Event()

    class Held(Named):
        def apply(self):
            gate.wait(WAIT)
            super().apply()

    base = Named(name="base")
    held = Held(name="held")
    manager.add_update(held)  # keeps the manager busy while the others are queued
    dependent = manager.add_update(Named(name="dependent"), requires=[base])
    manager.add_update(base)
    failing = Failing(name="failing")
    orphan = manager.add_update(Named(name="orphan"), requires=[failing])
    manager.add_update(failing)
    gate.set()
    assert dependent.result(WAIT).name == "dependent"
    with pytest.raises(UpdateAbortedError, match="requires 'failing', which ended rolled back"):
        orphan.result(WAIT)
    assert order == ["held", "base", "dependent"]
    records = manager.history()
    assert [r.name for r in records][:3] == ["held", "base", "dependent"]
    assert records[1].state == "applied" and "alterable" in records[1].steps


def test_history_keeps_the_journal_of_each_update(manager):
    app = module("hist_app", "def f():\n    return 1\n")
    new = module("hist_app_v2", "def f():\n    return 2\n")
    from pymoult.highlevel.updates import SafeRedefineUpdate

    manager.apply_update(SafeRedefineUpdate(app, "f", new.f), timeout=WAIT)
    record = manager.history()[-1]
    assert record.operations == ["swap code of hist_app.f"] and record.error is None
    assert record.pause is not None and record.as_dict()["state"] == "applied"


def test_apply_next_update_leaves_the_update_the_manager_thread_is_running_alone(manager):
    """The threaded manager's thread drives its current update; a caller's apply_next_update
    has nothing to drive (it used to fail that update with a TypeError)."""
    entered, release = threading.Event(), threading.Event()

    class Waits(Flag):
        def wait_alterability(self):
            entered.set()
            return release.wait(WAIT)

    update = Waits()
    future = manager.add_update(update)
    assert entered.wait(WAIT)
    try:
        assert manager.apply_next_update() is None
        assert manager.current_update is update and not future.done()
    finally:
        release.set()
    assert future.result(WAIT) is update and update.state is UpdateState.APPLIED


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


def test_apply_update_on_an_unstarted_manager_queues_nothing():
    manager = ThreadedManager()
    with pytest.raises(ThreadStateError, match="is not started"):
        manager.apply_update(Flag(), timeout=1)
    assert manager.pending() == []
