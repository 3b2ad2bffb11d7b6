"""Reverting an applied update (``RevertUpdate``): through its journal, at a safe point, newest
first only, and never "rolled back" or "reverted" when something stayed."""

import threading
import types

import pytest

from pymoult.errors import (PartialRollbackError, PymoultTypeError, RevertError,
                            UpdateDefinitionError, UpdateTimeoutError)
from pymoult.highlevel.managers import ThreadedManager
from pymoult.highlevel.revert import RevertUpdate
from pymoult.highlevel.updates import SafeRedefineUpdate, Update, UpdateState, isApplied
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.journal import Operation, current_journal, set_attribute
from pymoult.lowlevel.relinking import redefineFunction
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(60)
WAIT = 10.0


def make_app(name):
    module = types.ModuleType(name)
    exec("VERSION = 1\ndef greet():\n    return 'v1'\n", module.__dict__)
    return module


class SetVersion(Update):
    """Sets ``module.VERSION`` through the journal."""

    def __init__(self, module, version, name):
        super().__init__(name)
        self.module, self.version = module, version

    def apply(self):
        set_attribute(self.module, "VERSION", self.version)


@pytest.fixture
def manager():
    manager = ThreadedManager("revert tests").start()
    yield manager
    assert manager.stop(WAIT)


def apply(manager, update):
    return manager.add_update(update).result(WAIT)


def test_a_revert_undoes_the_update_and_says_reverted(manager):
    app = make_app("revert_app_one")
    greet = app.greet

    def greet_v2():
        return "v2"

    update = SafeRedefineUpdate(app, app.greet, greet_v2, name="revert test greet")
    apply(manager, update)
    assert app.greet() == "v2" and isApplied("revert test greet")
    revert = RevertUpdate(update)
    assert revert.name == "revert revert test greet"
    assert apply(manager, revert) is revert
    assert app.greet is greet and app.greet() == "v1"  # identity kept, old code back
    assert update.state is UpdateState.REVERTED and revert.state is UpdateState.APPLIED
    assert not isApplied("revert test greet") and not isApplied(update) and isApplied(revert)
    assert [str(op) for op in revert.journal] == [
        "revert (1 operations of 'revert test greet' undone)"]
    with pytest.raises(UpdateDefinitionError, match="'revert test greet' is reverted"):
        RevertUpdate(update)


def test_only_the_newest_update_may_be_reverted(manager):
    app = make_app("revert_app_order")
    first, second = SetVersion(app, 2, "version 2"), SetVersion(app, 3, "version 3")
    apply(manager, first)
    apply(manager, second)
    refused = manager.add_update(RevertUpdate(first))
    with pytest.raises(RevertError, match=r"cannot revert 'version 2': 'version 3' applied "
                                          r"after it may build on it; revert it first"):
        refused.result(WAIT)
    assert refused.exception().__class__ is RevertError
    assert app.VERSION == 3 and first.state is UpdateState.APPLIED  # nothing changed
    assert manager.history()[-1].state == "rolled back"
    apply(manager, RevertUpdate(second))
    assert app.VERSION == 2
    apply(manager, RevertUpdate(first))
    assert app.VERSION == 1
    assert (first.state, second.state) == (UpdateState.REVERTED, UpdateState.REVERTED)


def test_a_revert_of_an_update_reverted_meanwhile_is_refused(manager):
    app = make_app("revert_app_twice")
    update = SetVersion(app, 2, "version 2 once")
    apply(manager, update)
    one, two = RevertUpdate(update), RevertUpdate(update)  # both made while it was applied
    apply(manager, one)
    with pytest.raises(RevertError, match="'version 2 once': it is reverted, no longer applied"):
        manager.add_update(two).result(WAIT)
    assert app.VERSION == 1


class Stuck(Operation):
    text = "an operation that cannot be undone"

    def undo(self):
        raise OSError("the disk is gone")


class SetAndStick(SetVersion):
    def apply(self):
        super().apply()
        current_journal().record(Stuck())
        set_attribute(self.module, "EXTRA", True)


def test_an_operation_that_cannot_be_undone_makes_both_partially_rolled_back(manager):
    app = make_app("revert_app_partial")
    update = SetAndStick(app, 2, "revert test sticky")
    apply(manager, update)
    future = manager.add_update(RevertUpdate(update))
    with pytest.raises(PartialRollbackError) as raised:
        future.result(WAIT)
    message = str(raised.value)
    assert "'revert revert test sticky' partially rolled back" in message
    assert ("could not undo revert (2 operations of 'revert test sticky' undone; could not "
            "undo an operation that cannot be undone (OSError('the disk is gone')))") in message
    assert "a revert cannot be redone" in message
    assert app.VERSION == 1 and not hasattr(app, "EXTRA")  # the others were undone
    assert update.state is UpdateState.PARTIALLY_ROLLED_BACK
    assert manager.history()[-1].state == "partially rolled back"
    assert not isApplied("revert test sticky")


def test_a_revert_waits_for_the_threads_at_their_update_points(manager, spawn):
    app = make_app("revert_app_threads")
    seen, parked_once = [], threading.Event()

    def worker():
        while not spawn.stop.is_set():
            seen.append(app.VERSION)
            staticUpdatePoint()

    thread = spawn(DSU_Thread(target=worker, name="revert worker"))
    update = SetVersion(app, 2, "version 2 with a thread")
    update.threads, update.suspension = [thread], "points"
    apply(manager, update)
    revert = RevertUpdate(update)
    assert revert.threads == [thread] and revert.suspension == "points"
    original_suspend = revert.pause_hook

    def paused():  # called while the threads are held: the thread is at its point
        parked_once.set()
        original_suspend()

    revert.pause_hook = paused
    apply(manager, revert)
    assert parked_once.is_set() and app.VERSION == 1 and revert.pause is not None


def test_bad_arguments_are_refused_in_a_sentence():
    with pytest.raises(PymoultTypeError, match="RevertUpdate takes an applied Update, got 3"):
        RevertUpdate(3)
    with pytest.raises(UpdateDefinitionError, match="only an applied update can be reverted: "
                                                    "'never applied' is pending"):
        RevertUpdate(SetVersion(make_app("revert_app_bad"), 2, "never applied"))


def test_a_revert_cannot_be_reverted_nor_one_too_old_to_tell(manager, monkeypatch):
    from pymoult.highlevel import lifecycle

    app = make_app("revert_app_old")
    monkeypatch.setattr(lifecycle, "APPLIED_ORDER_KEPT", 2)
    oldest = SetVersion(app, 2, "oldest")
    apply(manager, oldest)
    later = [SetVersion(app, 3 + i, f"later {i}") for i in range(2)]
    for update in later:
        apply(manager, update)
    for update in reversed(later):
        revert = RevertUpdate(update)
        apply(manager, revert)
    with pytest.raises(UpdateDefinitionError, match="a revert cannot be reverted "
                                                    r"\('revert later 0'\)"):
        RevertUpdate(revert)
    assert app.VERSION == 2
    with pytest.raises(RevertError, match="cannot revert 'oldest': too many updates were "
                                          "applied after it to tell which build on it"):
        manager.add_update(RevertUpdate(oldest)).result(WAIT)
    assert app.VERSION == 2 and oldest.state is UpdateState.APPLIED


def test_a_revert_waits_until_no_thread_runs_the_code_the_update_put_in(manager, spawn):
    app = make_app("revert_app_running")
    app.inside, app.leave = inside, leave = threading.Event(), threading.Event()
    new = {}
    exec("def greet_v2():\n    inside.set()\n    leave.wait(10)\n    return 'v2'\n", new)
    greet_v2 = new["greet_v2"]
    update = SafeRedefineUpdate(app, app.greet, greet_v2, name="revert test running")
    apply(manager, update)
    caller = spawn(threading.Thread(target=app.greet))  # runs the update's version, held
    assert inside.wait(WAIT)
    waiting = RevertUpdate(update, max_tries=3, sleep_time=0.01)
    waiting.on_timeout = "fail"
    with pytest.raises(UpdateTimeoutError, match=r"greet_v2 still running in thread"):
        manager.add_update(waiting).result(WAIT)
    assert update.state is UpdateState.APPLIED and app.greet.__code__ is greet_v2.__code__
    leave.set()
    caller.join(WAIT)
    apply(manager, RevertUpdate(update))
    assert app.greet() == "v1" and update.state is UpdateState.REVERTED


def test_a_revert_waits_while_a_caller_is_between_two_functions_it_swaps_back(manager, spawn):
    app = types.ModuleType("revert_app_torn")
    app.between, app.go_on = between, go_on = threading.Event(), threading.Event()
    exec("def encode(x):\n    return x + 1\n"
         "def decode(x):\n    return x - 1\n"
         "def round_trip(x):\n    y = encode(x)\n    between.set()\n    go_on.wait(10)\n"
         "    return decode(y)\n", app.__dict__)
    new = {}
    exec("def encode(x):\n    return x * 2\ndef decode(x):\n    return x // 2\n", new)

    class Codec(Update):
        def apply(self):
            redefineFunction(app, "encode", new["encode"])
            redefineFunction(app, "decode", new["decode"])

    update = Codec("codec v2")
    apply(manager, update)
    results = []
    worker = spawn(threading.Thread(target=lambda: results.append(app.round_trip(5))))
    assert between.wait(WAIT)  # encoded by the update's encode, about to decode
    waiting = RevertUpdate(update, max_tries=3, sleep_time=0.01)
    waiting.on_timeout = "fail"
    try:
        with pytest.raises(UpdateTimeoutError, match=r"round_trip\(\) \(<string>\) is running "
                                                     r"and calls decode, encode, which the "
                                                     r"revert changes together"):
            manager.add_update(waiting).result(WAIT)
    finally:
        go_on.set()
    assert update.state is UpdateState.APPLIED
    worker.join(WAIT)
    assert results == [5]  # one version end to end: 5 * 2 // 2
    apply(manager, RevertUpdate(update))
    assert app.round_trip(5) == 5 and app.encode(5) == 6 and update.state is UpdateState.REVERTED
