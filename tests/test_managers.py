import logging
import threading
import types

import pytest

from pymoult.errors import (UpdateAbortedError, UpdateDefinitionError, UpdateStepError,
                            UpdateTimeoutError)
from pymoult.highlevel.managers import (Manager, collect_updates, fetch_manager,
                                       generatePreconfiguredManager)
from pymoult.highlevel.updates import SafeRedefineUpdate, Update, UpdateState, isApplied
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.relinking import redefineFunction
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0
STEPS = 1000  # a bound on how many steps a test lets a polling manager take


def drive(manager, future):
    for _ in range(STEPS):
        if future.done():
            return future
        manager.apply_next_update()
    raise AssertionError(f"{manager!r} did not finish within {STEPS} steps")


class Flag(Update):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.applied = 0

    def apply(self):
        self.applied += 1


def test_an_update_is_applied_and_its_future_resolved():
    manager = Manager("happy")
    update = Flag(name="flag")
    future = manager.add_update(update)
    assert "state=pending" in repr(update) and manager.pending() == [update]
    assert drive(manager, future).result() is update
    assert update.applied == 1 and isApplied(update) and update.state is UpdateState.APPLIED
    assert fetch_manager("happy") is manager
    assert manager.apply_next_update() is None  # nothing left


def test_requirements_no_postpones_and_never_aborts():
    manager = Manager()
    ready = [False]

    class Later(Flag):
        def check_requirements(self):
            return "yes" if ready[0] else "no"

    class Never(Flag):
        def check_requirements(self):
            return "never"

    later, never = Later(sleep_time=0), Never()  # no back-off between retries
    later_future = manager.add_update(later)
    never_future = manager.add_update(never)
    for _ in range(5):
        manager.apply_next_update()
    assert later.postponements >= 1 and not later_future.done()
    with pytest.raises(UpdateAbortedError, match="answered 'never'"):
        never_future.result(0)
    ready[0] = True
    drive(manager, later_future)
    assert later.applied == 1 and never.applied == 0 and never.state is UpdateState.ABORTED


def test_alterability_not_reached_times_out_and_releases_threads(spawn):
    manager = Manager()
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))  # never at a point
    update = Flag(threads=[thread], max_tries=3)
    update.suspension, update.on_timeout = "points", "fail"
    future = manager.add_update(update)
    drive(manager, future)
    with pytest.raises(UpdateTimeoutError, match="not alterable after 3 tries"):
        future.result(0)
    assert update.applied == 0 and thread.resume() is False  # its park request was withdrawn


def test_failing_apply_is_rolled_back_and_the_manager_goes_on(spawn):
    app = types.ModuleType("mgr_app")
    exec("def encode(x):\n    return x + 1\ndef decode(x):\n    return x - 1\n", app.__dict__)
    encode = app.encode
    new = types.ModuleType("mgr_app_v2")
    exec("def encode(x):\n    return x * 2\n", new.__dict__)

    class Broken(Update):
        def apply(self):
            redefineFunction(app, "encode", new.encode)
            raise RuntimeError("second half failed")

    manager = Manager()
    broken_future = manager.add_update(Broken())
    next_future = manager.add_update(Flag())
    drive(manager, broken_future)
    with pytest.raises(RuntimeError, match="second half failed"):
        broken_future.result(0)
    assert encode(3) == 4  # the half that was applied is undone
    drive(manager, next_future)
    assert next_future.result(0).applied == 1


def test_a_failed_apply_is_logged_with_its_traceback_a_refusal_with_its_sentence(caplog):
    class Raising(Update):
        def __init__(self, exc):
            super().__init__(name=type(exc).__name__)
            self.exc = exc

        def apply(self):
            raise self.exc

    manager = Manager()
    with caplog.at_level(logging.DEBUG, logger="pymoult"):
        for exc in (RuntimeError("the update's own bug"),
                    UpdateAbortedError("prepared, then aborted")):
            with pytest.raises(type(exc)):
                drive(manager, manager.add_update(Raising(exc))).result(0)
    stops = {record.getMessage(): record for record in caplog.records
             if record.levelno >= logging.WARNING and "rolling back" in record.getMessage()}
    bug = stops.pop(next(m for m in stops if "RuntimeError" in m))
    assert bug.levelno == logging.ERROR and bug.exc_info[1].args == ("the update's own bug",)
    [(message, refusal)] = stops.items()
    assert refusal.levelno == logging.WARNING and refusal.exc_info is None
    assert message.endswith("stopped (prepared, then aborted); rolling back")


def test_a_failing_step_after_apply_is_reported_distinctly():
    class BadCleanup(Flag):
        def cleanup(self):
            raise OSError("disk full")

    manager = Manager()
    update = BadCleanup()
    future = drive(manager, manager.add_update(update))
    with pytest.raises(UpdateStepError, match="is applied, but its cleanup raised") as info:
        future.result(0)
    assert info.value.step == "cleanup" and isApplied(update) and update.applied == 1


def test_updates_that_cannot_run_are_refused_when_added():
    manager = Manager()

    class NoApply(Update):
        pass

    with pytest.raises(UpdateDefinitionError, match="NoApply does not define apply"):
        manager.add_update(NoApply())
    with pytest.raises(UpdateDefinitionError, match="expected an Update"):
        manager.add_update(lambda: None)
    with pytest.raises(UpdateDefinitionError, match="max_tries must be a positive int"):
        manager.add_update(Flag(max_tries=0))
    update = Flag()
    manager.add_update(update)
    drive(manager, manager.add_update(Flag()))
    with pytest.raises(UpdateDefinitionError, match="already submitted"):
        manager.add_update(update)


def test_safe_redefine_at_static_points_of_a_running_thread(spawn):
    app = types.ModuleType("mgr_live")
    exec("def greet():\n    return 'v1'\n", app.__dict__)
    new = types.ModuleType("mgr_live_v2")
    exec("def greet():\n    return 'v2'\n", new.__dict__)
    seen = []
    started = threading.Event()
    progressed = threading.Event()

    def worker():
        started.set()
        while not spawn.stop.is_set():
            seen.append(app.greet())
            progressed.set()
            staticUpdatePoint()

    thread = spawn(DSU_Thread(target=worker))
    assert started.wait(WAIT)
    manager = Manager(threads=[thread])
    future = manager.add_update(SafeRedefineUpdate(app, "greet", new.greet))
    manager.apply_next_update()  # requirements and setup
    manager.apply_next_update()  # first alterability try: asks the thread to park
    assert thread.wait_suspended(WAIT)  # (a polling manager's tries are the caller's calls)
    marker = len(seen)  # parked: every call after this one happens after the update
    assert set(seen) == {"v1"}
    update = drive(manager, future).result(0)
    assert update.pause is not None and thread.is_alive() and not thread.is_suspended()
    progressed.clear()
    assert progressed.wait(WAIT)  # it ran on after the update
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    assert seen[marker:] and set(seen[marker:]) == {"v2"}
    thread.resume()


def test_an_update_cancelled_while_queued_never_runs():
    manager = Manager()
    update = Flag()
    future = manager.add_update(update)
    assert future.cancel()
    manager.apply_next_update()
    assert update.state is UpdateState.CANCELLED and update.applied == 0


def test_postpone_abort_and_finish():
    manager = Manager()
    first, second = Flag(name="first"), Flag(name="second")
    first_future = manager.add_update(first)
    second_future = manager.add_update(second)
    manager.apply_next_update()  # first: setup done, now waiting
    assert manager.postpone() is True and manager.pending() == [second, first]
    manager.apply_next_update()  # second starts
    assert manager.abort() is True
    with pytest.raises(UpdateAbortedError, match="'second' was aborted"):
        second_future.result(0)
    assert second.state is UpdateState.ABORTED
    manager.apply_next_update()
    assert manager.finish() is first and first_future.result(0) is first


def test_preconfigured_manager_sets_update_attributes():
    Quick = generatePreconfiguredManager(Manager, Flag, max_tries=2, sleep_time=0)
    manager = Quick()
    update = Flag()
    manager.add_update(update)
    assert update.max_tries == 2 and update.sleep_time == 0


def test_timeout_policy_postpone_then_fail(spawn):
    manager = Manager()
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))  # never at a point

    class Patient(Flag):
        on_timeout = "postpone"
        max_postponements = 2

    update = Patient(threads=[thread], max_tries=2, sleep_time=0)
    future = drive(manager, manager.add_update(update))
    with pytest.raises(UpdateTimeoutError, match="not alterable after 2 tries"):
        future.result(0)
    assert update.postponements == 2
    with pytest.raises(UpdateDefinitionError, match="on_timeout must be 'fail' or 'postpone'"):
        bad = Flag()
        bad.on_timeout = "retry"
        manager.add_update(bad)


def test_statistics_summarise_the_history():
    manager = Manager()
    drive(manager, manager.add_update(Flag()))

    class Never(Flag):
        def check_requirements(self):
            return "never"

    drive(manager, manager.add_update(Never()))
    stats = manager.statistics()
    assert stats["finished"] == {"applied": 1, "aborted": 1} and stats["queued"] == 0
    assert stats["pause_median"] is not None and stats["pause_max"] >= stats["pause_median"]


def test_collect_updates_sees_only_the_calling_threads_updates_and_nests():
    manager = Manager("collecting")
    other_added = threading.Event()

    def add_from_elsewhere():
        manager.add_update(Flag(name="elsewhere"))
        other_added.set()

    with collect_updates() as outer:
        first = Flag(name="first")
        first_future = manager.add_update(first)
        with collect_updates() as inner:
            second = Flag(name="second")
            manager.add_update(second)
        thread = threading.Thread(target=add_from_elsewhere)
        thread.start()
        assert other_added.wait(WAIT)
        thread.join(WAIT)
    manager.add_update(Flag(name="after"))
    assert outer == [(first, first_future)]
    assert [update for update, _ in inner] == [second]


class Watching(Flag):
    """Counts the namespace watches the manager asks for; changes a class by hand in its
    setup when it has one."""

    def __init__(self, target, **kwargs):
        super().__init__(**kwargs)
        self.target, self.watches = target, 0

    def watched(self):
        self.watches += 1
        return [self.target]

    def apply(self):
        raise RuntimeError("fails: rolled back")


def test_the_namespaces_are_watched_around_setup_only_when_the_update_has_one():
    target = type("Target", (), {"value": 1})
    update = Watching(target)
    manager = Manager()
    future = drive(manager, manager.add_update(update))
    assert isinstance(future.exception(), RuntimeError)
    assert update.watches == 1  # apply's: no setup, nothing of the update ran before it

    def setup():
        target.value = 2  # by hand: journaled through the watch, undone with the update

    update = Watching(target)
    update.preupdate_setup = setup  # set on the update, not its class: a setup all the same
    future = drive(manager, manager.add_update(update))
    assert isinstance(future.exception(), RuntimeError)
    assert update.watches == 2 and target.value == 1


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
