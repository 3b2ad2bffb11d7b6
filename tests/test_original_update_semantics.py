"""The original Pymoult's meaning of the ready-made updates and managers, on plain threads with
no update point: safe redefinitions wait for quiescence, conversions need only the threads
suspended, an update not alterable in time is postponed, deadlocks are refused at once."""

import threading
import time
import types

import pytest

from pymoult.errors import DeadlockDetectedError, PymoultTypeError, PymoultValueError, \
    UpdateTimeoutError
from pymoult.highlevel.managers import Manager, ThreadedManager
from pymoult.highlevel.updates import (EagerConversionUpdate, SafeRedefineUpdate, Update,
                                       UpdateState, isApplied)
from pymoult.lowlevel.alterability import (cleanForceQuiescence, setupForceQuiescence,
                                           waitForceQuiescence)

WAIT = 10.0


@pytest.fixture
def manager():
    manager = ThreadedManager().start()
    yield manager
    assert manager.stop(WAIT)


def app_module(name, source):
    module = types.ModuleType(name)
    exec(source, module.__dict__)
    return module


def calling_thread(spawn, app, seen, function="func"):
    """A plain thread that calls ``app.<function>()`` in a loop, with no update point."""
    called = threading.Event()

    def main():
        while not spawn.stop.is_set():
            seen.append(getattr(app, function)())
            called.set()
            spawn.stop.wait(0.002)

    thread = spawn(threading.Thread(target=main, name="app"))
    assert called.wait(WAIT)
    return thread


def test_safe_redefinition_of_a_plain_threads_function(manager, spawn):
    app = app_module("sem_app", "def func():\n    return 'v1'\n")
    new = app_module("sem_app_v2", "def func():\n    return 'v2'\n")
    seen = []
    thread = calling_thread(spawn, app, seen)
    old_reference = app.func
    update = SafeRedefineUpdate(app, app.func, new.func, name="func", threads=[thread])
    assert manager.apply_update(update, timeout=WAIT) is update
    assert old_reference() == "v2"
    count = len(seen)
    deadline = time.monotonic() + WAIT
    while len(seen) < count + 5 and time.monotonic() < deadline:
        spawn.stop.wait(0.001)
    assert len(seen) >= count + 5 and set(seen[count:]) == {"v2"}
    assert isApplied("func") and isApplied(update)


def test_a_running_function_keeps_the_update_waiting_and_the_timeout_says_why(manager, spawn):
    app = app_module("sem_busy", """
def func(stop):
    while not stop.is_set():
        pass
    return 'v1'
""")
    new = app_module("sem_busy_v2", "def func(stop):\n    return 'v2'\n")
    inside = threading.Event()

    def main():
        inside.set()
        app.func(spawn.stop)

    thread = spawn(threading.Thread(target=main, name="busy"))
    assert inside.wait(WAIT)
    update = SafeRedefineUpdate(app, app.func, new.func, threads=[thread], timeout=0.3)
    update.on_timeout = "fail"
    with pytest.raises(UpdateTimeoutError) as raised:
        manager.apply_update(update, timeout=WAIT)
    message = str(raised.value)
    assert "timeout 0.3 s" in message
    assert "func still running in thread 'busy'" in message
    assert update.state is UpdateState.FAILED and thread.is_alive()


class Flip(Update):
    """Sets ``box["flag"]``: what lets the other update become alterable."""

    def __init__(self, box, **kwargs):
        super().__init__(**kwargs)
        self.box = box

    def apply(self):
        self.box["flag"] = True


def test_an_update_not_alterable_in_time_is_postponed_and_applied_after_the_next(manager, spawn):
    app = app_module("sem_wait", """
def func(box):
    while not box.get("flag"):
        box["spins"] = box.get("spins", 0) + 1
    return 'v1'
""")
    new = app_module("sem_wait_v2", "def func(box):\n    return 'v2'\n")
    box, order = {}, []
    inside = threading.Event()

    def main():
        inside.set()
        app.func(box)
        spawn.stop.wait(WAIT)

    thread = spawn(threading.Thread(target=main, name="spinner"))
    assert inside.wait(WAIT)
    first = SafeRedefineUpdate(app, app.func, new.func, name="first", threads=[thread],
                               max_tries=2, sleep_time=0.01)
    second = Flip(box, name="second")
    first_future = manager.add_update(first)
    second_future = manager.add_update(second)
    first_future.add_done_callback(lambda f: order.append("first"))
    second_future.add_done_callback(lambda f: order.append("second"))
    assert first_future.result(WAIT) is first
    assert second_future.result(WAIT) is second
    assert order == ["second", "first"] and first.postponements >= 1


def test_postponements_are_bounded(manager, spawn):
    app = app_module("sem_never", """
def func(stop):
    while not stop.is_set():
        pass
""")
    inside = threading.Event()
    thread = spawn(threading.Thread(target=lambda: (inside.set(), app.func(spawn.stop))))
    assert inside.wait(WAIT)
    update = SafeRedefineUpdate(app, app.func, lambda stop: None, threads=[thread], max_tries=1,
                                sleep_time=0.001)
    update.max_postponements = 2
    with pytest.raises(UpdateTimeoutError, match=r"after 2 postponements"):
        manager.apply_update(update, timeout=WAIT)


def test_eager_conversion_of_a_plain_threads_objects(manager, spawn):
    app = app_module("sem_items", """
class Item:
    def __init__(self, n):
        self.n = n
    def display(self):
        return f"item {self.n}"
items = [Item(n) for n in range(100)]
""")
    new = app_module("sem_items_v2", """
class Item:
    def display(self):
        return f"item {self.n} ({self.colour})"
""")
    shown = []
    thread = calling_thread(spawn, types.SimpleNamespace(show=lambda: app.items[7].display()),
                            shown, function="show")

    def transformer(item):
        item.colour = "red"

    update = EagerConversionUpdate(app.Item, new.Item, transformer, module=app, threads=[thread])
    assert manager.apply_update(update, timeout=WAIT) is update
    assert app.items[7].display() == "item 7 (red)"
    assert all(item.colour == "red" for item in app.items)


def test_the_future_refuses_a_deadlock_at_once(manager, spawn):
    app = app_module("sem_dead", "def func():\n    return 1\n")
    outcome = []
    asked = threading.Event()

    def main():
        update = SafeRedefineUpdate(app, app.func, lambda: 2, threads=[threading.current_thread()])
        future = manager.add_update(update)
        try:
            future.result()
        except DeadlockDetectedError as exc:
            outcome.append(str(exc))
        try:
            manager.wait_current_update()
        except DeadlockDetectedError as exc:
            outcome.append(str(exc))
        asked.set()

    spawn(threading.Thread(target=main, name="needed"))
    assert asked.wait(WAIT)
    assert len(outcome) == 2
    assert "called by 'needed', a thread the update needs suspended" in outcome[0]


def test_the_original_setters_and_is_applied_by_name():
    update = Flip({}, name="setters")
    update.set_max_tries(3)
    update.set_sleep_time(0.2)
    assert (update.max_tries, update.sleep_time) == (3, 0.2)
    with pytest.raises(PymoultValueError, match="max_tries must be a positive int, got 0"):
        update.set_max_tries(0)
    with pytest.raises(PymoultTypeError, match="max_tries must be a positive int"):
        update.set_max_tries(2.5)
    with pytest.raises(PymoultValueError):
        update.set_sleep_time(-1)
    assert not isApplied("setters")
    Manager().apply_update(update)
    assert isApplied("setters") and not isApplied("never queued")
    with pytest.raises(PymoultTypeError, match="an update or an update's name"):
        isApplied(42)


def test_a_gate_left_by_a_rolled_back_update_releases_its_callers(manager, spawn):
    app = app_module("sem_gate", "def func():\n    return 'v1'\n")

    class Tutorial(Update):
        def preupdate_setup(self):
            self.events = setupForceQuiescence(app, app.func)

        def wait_alterability(self):
            return waitForceQuiescence(self.events[0])

        def apply(self):
            raise RuntimeError("second half failed")  # rolled back; cleanup never called

    results = []
    gate_set = threading.Event()
    update = Tutorial(name="tutorial")
    original_setup = update.preupdate_setup

    def setup_then_signal():
        original_setup()
        gate_set.set()

    update.preupdate_setup = setup_then_signal
    future = manager.add_update(update)
    assert gate_set.wait(WAIT)
    caller = spawn(threading.Thread(target=lambda: results.append(app.func())))
    with pytest.raises(RuntimeError, match="second half failed"):
        future.result(WAIT)
    caller.join(WAIT)
    assert results == ["v1"] and not caller.is_alive()
    assert update.events[1].is_set()  # released by the manager
    cleanForceQuiescence(update.events[1])  # harmless afterwards
