import logging
import threading

import pytest

from pymoult.errors import (ActiveUpdateError, ContinuationError, DeadlockDetectedError,
                            PymoultTypeError, ThreadStateError)
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import (DSU_Thread, RebootException, get_thread_by_name,
                             set_active_update_function, set_thread_trace, start_active_update)

pytestmark = pytest.mark.timeout(15)
WAIT = 5.0


def point_loop(stop, started=None, name="loop"):
    """A main that runs update points until ``stop`` is set."""
    def main():
        if started is not None:
            started.set()
        while not stop.is_set():
            staticUpdatePoint(name)
    return main


def looping_thread(spawn, **kwargs):
    started = threading.Event()
    thread = spawn(DSU_Thread(target=point_loop(spawn.stop, started), **kwargs))
    assert started.wait(WAIT)
    return thread


# -- construction and main ------------------------------------------------------------------


def test_target_runs_with_its_arguments(spawn):
    got = []
    thread = spawn(DSU_Thread(target=lambda a, b=None: got.append((a, b)), args=(1,),
                              kwargs={"b": 2}))
    thread.join(WAIT)
    assert got == [(1, 2)]


def test_subclass_main_runs(spawn):
    got = threading.Event()

    class Worker(DSU_Thread):
        def main(self):
            got.set()

    spawn(Worker())
    assert got.wait(WAIT)


def test_non_callable_target_is_a_type_error_naming_it():
    with pytest.raises(PymoultTypeError, match=r"^DSU_Thread target must be callable, got 42$"):
        DSU_Thread(target=42)
    with pytest.raises(TypeError):
        DSU_Thread(target="main")


def test_second_start_is_refused(spawn):
    thread = spawn(DSU_Thread(target=lambda: None))
    thread.join(WAIT)
    with pytest.raises(ThreadStateError, match="already started"):
        thread.start()
    with pytest.raises(RuntimeError):  # ThreadStateError is a RuntimeError, as in threading
        thread.start()


def test_reboot_exception_restarts_main_and_is_not_swallowed_by_except_exception(spawn):
    runs = []

    def main():
        runs.append(len(runs))
        if len(runs) < 3:
            try:
                raise RebootException()
            except Exception:  # application code must not swallow a reboot
                pytest.fail("RebootException was caught by except Exception")

    thread = spawn(DSU_Thread(target=main))
    thread.join(WAIT)
    assert runs == [0, 1, 2]
    assert thread.reboots == 2


def test_switch_main_then_reboot_runs_the_new_main(spawn):
    ran = threading.Event()

    def first():
        threading.current_thread().switch_main(second, (7,), {"y": 8})
        raise RebootException()

    def second(x, y):
        ran.set()
        assert (x, y) == (7, 8)

    thread = spawn(DSU_Thread(target=first))
    assert ran.wait(WAIT)
    thread.join(WAIT)
    assert thread.reboots == 1


def test_switch_main_refuses_non_callable():
    with pytest.raises(PymoultTypeError, match="new main must be callable, got 3"):
        DSU_Thread().switch_main(3)


def test_repr_shows_dsu_state(spawn):
    thread = looping_thread(spawn, name="worker")
    assert "worker" in repr(thread) and "passive" in repr(thread) and "dsu=running" in repr(thread)
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    assert "dsu=parked at 'loop'" in repr(thread)
    thread.resume()
    spawn.stop.set()
    thread.join(WAIT)
    assert "dsu=finished" in repr(thread)


# -- suspension -----------------------------------------------------------------------------


def test_suspend_parks_at_the_next_point_and_resume_releases(spawn):
    thread = looping_thread(spawn)
    assert not thread.is_suspended()
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    assert thread.is_suspended()
    assert thread.resume() is True
    # the thread runs again: it can be parked a second time
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    assert thread.resume() is True


def test_parked_thread_does_not_run_until_resumed(spawn):
    passed_point = threading.Event()
    armed = threading.Event()

    def main():
        while not spawn.stop.is_set():
            staticUpdatePoint()
            if armed.is_set():
                passed_point.set()

    thread = spawn(DSU_Thread(target=main))
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    armed.set()
    # a bounded observation, not a synchronisation: if the parked thread ran at all it would
    # pass its point and set the event
    assert not passed_point.wait(0.1)
    thread.resume()
    assert passed_point.wait(WAIT)


def test_resume_of_a_thread_not_suspended_returns_false(spawn):
    thread = looping_thread(spawn)
    assert thread.resume() is False
    assert thread.resume() is False


def test_resume_cancels_a_suspension_not_yet_reached(spawn):
    gate = threading.Event()
    reached = threading.Event()

    def main():
        gate.wait(WAIT)  # not at a point yet
        staticUpdatePoint()
        reached.set()

    thread = spawn(DSU_Thread(target=main))
    thread.suspend()
    assert thread.resume() is True
    gate.set()
    assert reached.wait(WAIT)  # the point did not park
    thread.join(WAIT)


def test_wait_suspended_times_out_when_no_point_is_reached(spawn):
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))
    thread.suspend(anywhere=False)
    assert thread.wait_suspended(0.05) is False
    assert thread.resume() is True


def test_wait_suspended_returns_false_when_the_thread_ends_during_the_wait(spawn):
    waiting = threading.Event()
    thread = DSU_Thread(target=lambda: waiting.wait(WAIT))  # ends once the waiter waits
    control = thread._pymoult_control

    class SignallingCondition(threading.Condition):
        def wait(self, timeout=None):
            waiting.set()  # the waiter is inside the wait now
            return super().wait(timeout)

    control.cond = SignallingCondition(control._lock)
    spawn(thread)
    thread.suspend()
    assert thread.wait_suspended(WAIT) is False  # woken by the thread's end, not by a timeout
    assert waiting.is_set()


def test_waiting_for_yourself_to_park_is_a_deadlock_error(spawn):
    errors = []

    def main():
        try:
            threading.current_thread().wait_suspended(1)
        except DeadlockDetectedError as exc:
            errors.append(exc)

    thread = spawn(DSU_Thread(target=main))
    thread.join(WAIT)
    assert len(errors) == 1 and "cannot wait for itself" in str(errors[0])


def test_suspend_of_unstarted_or_finished_thread_is_refused(spawn):
    thread = DSU_Thread(target=lambda: None)
    with pytest.raises(ThreadStateError, match="not running"):
        thread.suspend()
    spawn(thread).join(WAIT)
    with pytest.raises(ThreadStateError, match="not running"):
        thread.suspend()


# -- active updates -------------------------------------------------------------------------


def test_active_thread_runs_its_update_function_at_its_next_point(spawn):
    thread = looping_thread(spawn, active=True)
    assert thread.active
    future = set_active_update_function(lambda: threading.current_thread().name, thread)
    assert future.result(WAIT) == thread.name
    assert thread.active_update_function is None


def test_passive_thread_runs_its_update_function_only_when_asked(spawn):
    ask = threading.Event()
    asked = []

    def main():
        while not spawn.stop.is_set():
            staticUpdatePoint()
            if ask.is_set():
                ask.clear()
                asked.append(start_active_update())

    thread = spawn(DSU_Thread(target=main))
    future = set_active_update_function(lambda: "done", thread)
    assert not future.done()
    ask.set()
    assert future.result(WAIT) == "done"
    assert asked[0] is future


def test_set_active_later_runs_the_pending_function(spawn):
    thread = looping_thread(spawn)
    future = set_active_update_function(lambda: 5, thread)
    thread.set_active()
    assert future.result(WAIT) == 5
    thread.set_passive()
    assert not thread.active


def test_failing_active_update_is_logged_and_surfaced_and_the_thread_keeps_running(spawn, caplog):
    thread = looping_thread(spawn, active=True)

    def broken():
        raise KeyError("boom")

    with caplog.at_level(logging.ERROR, logger="pymoult"):
        future = set_active_update_function(broken, thread)
        with pytest.raises(ActiveUpdateError, match="raised KeyError") as info:
            future.result(WAIT)
    assert isinstance(info.value.__cause__, KeyError)
    assert any("active update function" in r.getMessage() for r in caplog.records)
    # still alive and serving points
    assert set_active_update_function(lambda: 1, thread).result(WAIT) == 1


def test_replacing_a_pending_active_function_fails_the_first_future(spawn):
    thread = looping_thread(spawn)  # passive: nothing runs the function
    first = set_active_update_function(lambda: 1, thread)
    second = set_active_update_function(lambda: 2, thread)
    with pytest.raises(ThreadStateError, match="superseded"):
        first.result(WAIT)
    thread.set_active()
    assert second.result(WAIT) == 2


def test_thread_ending_with_a_pending_active_function_fails_its_future(spawn):
    go = threading.Event()
    thread = spawn(DSU_Thread(target=lambda: go.wait(WAIT)))
    future = set_active_update_function(lambda: 1, thread)
    go.set()
    thread.join(WAIT)
    with pytest.raises(ThreadStateError, match="ended"):
        future.result(WAIT)


def test_start_active_update_without_pending_function_returns_none():
    assert start_active_update() is None


def test_active_update_function_must_be_callable(spawn):
    thread = looping_thread(spawn)
    with pytest.raises(PymoultTypeError, match="must be callable, got 'nope'"):
        set_active_update_function("nope", thread)
    with pytest.raises(PymoultTypeError, match="expected a thread, got 'thread'"):
        set_active_update_function(lambda: 1, "thread")


def test_plain_thread_can_run_an_active_update(spawn):
    go = threading.Event()
    result = []
    thread = spawn(threading.Thread(target=lambda: (go.wait(WAIT),
                                                    result.append(start_active_update()))))
    future = set_active_update_function(lambda: "plain", thread)
    go.set()
    assert future.result(WAIT) == "plain"


# -- continuations --------------------------------------------------------------------------


def test_switch_runs_the_sleeping_continuation_and_comes_back(spawn):
    results = []

    class Worker(DSU_Thread):
        calls = 0

        def sleeping_continuation_function(self):
            self.calls += 1
            return ("continuation", self.calls)

        def main(self):
            assert self.suspended_frames() == []  # created, asleep, not yet started
            results.append(self.switch())
            results.append(self.switch())
            results.append(len(self.suspended_frames()) == 1)

    spawn(Worker()).join(WAIT)
    assert results == [("continuation", 1), ("continuation", 2), True]


def test_switch_without_continuation_function_returns_none(spawn):
    results = []
    thread = spawn(DSU_Thread(target=lambda: results.append(threading.current_thread().switch())))
    thread.join(WAIT)
    assert results == [None]


def test_switch_from_another_thread_is_refused_without_harm(spawn):
    inside = threading.Event()
    done = threading.Event()
    results = []

    class Worker(DSU_Thread):
        def sleeping_continuation_function(self):
            return "ok"

        def main(self):
            inside.set()
            done.wait(WAIT)
            results.append(self.switch())

    thread = spawn(Worker(name="owner"))
    assert inside.wait(WAIT)
    with pytest.raises(ThreadStateError, match=r"^switch\(\) must be called by 'owner' itself"):
        thread.switch()
    done.set()
    thread.join(WAIT)
    assert results == ["ok"]


def test_switch_before_start_is_refused():
    with pytest.raises(ThreadStateError):
        DSU_Thread().switch()


def test_failing_continuation_raises_in_the_switcher_and_stays_usable(spawn, caplog):
    outcomes = []

    class Worker(DSU_Thread):
        fail = True

        def sleeping_continuation_function(self):
            if self.fail:
                self.fail = False
                raise ValueError("bad continuation")
            return "recovered"

        def main(self):
            try:
                self.switch()
            except ContinuationError as exc:
                outcomes.append(type(exc.__cause__))
            outcomes.append(self.switch())

    with caplog.at_level(logging.ERROR, logger="pymoult"):
        spawn(Worker()).join(WAIT)
    assert outcomes == [ValueError, "recovered"]
    assert any("sleeping continuation" in r.getMessage() for r in caplog.records)


def test_switch_from_inside_the_continuation_is_refused(spawn):
    causes = []

    class Worker(DSU_Thread):
        def sleeping_continuation_function(self):
            return self.switch()

        def main(self):
            try:
                self.switch()
            except ContinuationError as exc:
                causes.append(exc.__cause__)

    spawn(Worker()).join(WAIT)
    assert isinstance(causes[0], ThreadStateError)
    assert "inside" in str(causes[0])


# -- utilities -------------------------------------------------------------------------------


def test_get_thread_by_name(spawn):
    thread = looping_thread(spawn, name="findme")
    assert get_thread_by_name("findme") is thread
    assert get_thread_by_name("no such thread") is None


def test_set_thread_trace_refuses_non_threads():
    with pytest.raises(PymoultTypeError, match="expected a thread, got 'x'"):
        set_thread_trace("x", None)


def test_update_point_in_main_thread_and_plain_thread_is_not_an_error(spawn):
    staticUpdatePoint()
    staticUpdatePoint("named")
    thread = spawn(threading.Thread(target=staticUpdatePoint))
    thread.join(WAIT)


def test_wait_suspended_before_start_leaves_the_thread_usable(spawn):
    thread = DSU_Thread(target=lambda: [staticUpdatePoint() for _ in iter(spawn.stop.is_set, True)])
    assert thread.wait_suspended(0.01) is False
    spawn(thread)
    assert "dsu=running" in repr(thread)
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    thread.resume()
