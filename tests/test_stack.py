import threading
import time

import pytest

from pymoult.errors import PymoultTypeError, RebootError, ThreadStateError
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.stack import rebootFunction, reboot_boundary, resetThread, switchMain
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


def test_reset_thread_reboots_at_the_next_update_point(spawn):
    runs = []
    ran_twice = threading.Event()

    def main():
        runs.append(1)
        if len(runs) == 2:
            ran_twice.set()
        while not spawn.stop.is_set():
            staticUpdatePoint()

    thread = spawn(DSU_Thread(target=main))
    assert resetThread(thread).result(WAIT) == 1
    assert ran_twice.wait(WAIT)
    assert thread.reboots == 1


def test_reboot_into_a_new_main_runs_finally_blocks(spawn):
    cleaned = threading.Event()
    new_main_args = []

    def old_main():
        try:
            while not spawn.stop.is_set():
                staticUpdatePoint()
        finally:
            cleaned.set()

    def new_main(a, b):
        new_main_args.append((a, b))

    thread = spawn(DSU_Thread(target=old_main))
    switchMain(thread, new_main, [1], {"b": 2})
    resetThread(thread).result(WAIT)
    thread.join(WAIT)
    assert cleaned.is_set()
    assert new_main_args == [(1, 2)]


def test_parked_thread_reboots_when_resumed(spawn):
    started = []

    def main():
        started.append(1)
        while not spawn.stop.is_set():
            staticUpdatePoint()

    thread = spawn(DSU_Thread(target=main))
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    future = resetThread(thread)
    assert not future.done()
    thread.resume()
    assert future.result(WAIT) == 1
    assert len(started) == 2


def test_asynchronous_reset_reaches_a_thread_without_update_points(spawn):
    looping = threading.Event()
    runs = []

    def main():
        runs.append(1)
        if len(runs) == 1:
            looping.set()
            while True:  # never reaches an update point
                time.sleep(0.001)

    thread = spawn(DSU_Thread(target=main))
    assert looping.wait(WAIT)
    assert resetThread(thread, asynchronous=True).result(WAIT) == 1
    thread.join(WAIT)
    assert runs == [1, 1]
    assert "reboot requested" not in repr(thread)  # the pending request was consumed


def test_reset_thread_refuses_plain_unstarted_and_finished_threads(spawn):
    with pytest.raises(PymoultTypeError, match="a DSU_Thread is required, got <_MainThread"):
        resetThread(threading.current_thread())
    thread = DSU_Thread(target=lambda: None)
    with pytest.raises(ThreadStateError, match="it has not started"):
        resetThread(thread)
    spawn(thread).join(WAIT)
    with pytest.raises(ThreadStateError, match="it has finished"):
        resetThread(thread)


def test_reboot_pending_when_the_thread_ends_fails_its_future(spawn):
    go = threading.Event()
    thread = spawn(DSU_Thread(target=lambda: go.wait(WAIT)))
    future = resetThread(thread)
    go.set()
    thread.join(WAIT)
    with pytest.raises(ThreadStateError, match="ended before reaching an update point"):
        future.result(WAIT)


def test_switch_main_before_start_chooses_what_runs(spawn):
    ran = []
    thread = DSU_Thread(target=lambda: ran.append("target"))
    switchMain(thread, lambda: ran.append("switched"))
    spawn(thread).join(WAIT)
    assert ran == ["switched"]
    with pytest.raises(PymoultTypeError):
        switchMain(threading.current_thread(), print)


# -- rebootFunction ---------------------------------------------------------------------------


def test_reboot_function_of_main_captures_state_and_continues_with_the_new_function(spawn):
    progress = threading.Event()
    resumed_from = []

    def compute():
        total = 0
        i = 0
        while not spawn.stop.is_set():
            i += 1
            total += i
            if i == 100:
                progress.set()
            staticUpdatePoint()

    def new_compute(state):
        resumed_from.append(state)

    thread = spawn(DSU_Thread(target=compute))
    assert progress.wait(WAIT)
    future = rebootFunction(thread, compute, new_compute,
                            lambda frame: (frame.f_locals["i"], frame.f_locals["total"]))
    future.result(WAIT)
    thread.join(WAIT)
    (i, total), = resumed_from
    assert i >= 100 and total == i * (i + 1) // 2


def test_reboot_function_at_a_boundary_restarts_only_that_function(spawn):
    inside = threading.Event()
    results = []

    @reboot_boundary
    def step(n):
        inside.set()
        while not spawn.stop.is_set():
            staticUpdatePoint()
        return "never"

    def new_step(state):
        return ("new", state["n"])

    def main():
        results.append(step(5))
        results.append("after")

    thread = spawn(DSU_Thread(target=main))
    assert inside.wait(WAIT)
    rebootFunction(thread, step, new_step).result(WAIT)
    thread.join(WAIT)
    assert results == [("new", 5), "after"]
    assert thread.reboots == 0  # main itself was not restarted


def test_reboot_function_refuses_other_functions_at_request_time(spawn):
    def helper():
        pass

    thread = spawn(DSU_Thread(target=lambda: [staticUpdatePoint()
                                              for _ in iter(spawn.stop.is_set, True)]))
    with pytest.raises(RebootError, match="neither the thread's main nor a function marked"):
        rebootFunction(thread, helper, helper)

    @reboot_boundary
    def not_running():
        pass

    with pytest.raises(RebootError, match="it is not running there"):
        rebootFunction(thread, not_running, helper)
    with pytest.raises(PymoultTypeError, match="new_function must be callable"):
        rebootFunction(thread, helper, None)
    with pytest.raises(PymoultTypeError, match="capture_state must be callable"):
        rebootFunction(thread, helper, helper, 5)


def test_failing_capture_state_cancels_the_reboot_and_the_thread_goes_on(spawn):
    points = []

    def main():
        while not spawn.stop.is_set():
            points.append(1)
            staticUpdatePoint()

    def broken_capture(frame):
        raise LookupError("no state")

    thread = spawn(DSU_Thread(target=main))
    future = rebootFunction(thread, main, print, broken_capture)
    with pytest.raises(LookupError):
        future.result(WAIT)
    assert thread.is_alive() and thread.reboots == 0
    thread.suspend()  # still serving points
    assert thread.wait_suspended(WAIT)
    thread.resume()


def test_async_exception_helper_refuses_instances_and_dead_threads(spawn):
    from pymoult import _cpython

    thread = spawn(DSU_Thread(target=lambda: None))
    thread.join(WAIT)
    with pytest.raises(PymoultTypeError, match="an exception class is required"):
        _cpython.raise_in_thread(thread, RebootError("instance"))
    with pytest.raises(ThreadStateError, match="it is not running"):
        _cpython.raise_in_thread(thread, RebootError)


def test_a_boundary_reboot_without_a_replacement_starts_the_same_call_again(spawn):
    from pymoult.threads import RebootException

    calls = []

    @reboot_boundary
    def step(n):
        calls.append(n)
        if len(calls) == 1:
            raise RebootException(target=step)  # no replacement: restart the boundary as it is
        return ("again", n)

    results = []
    thread = spawn(DSU_Thread(target=lambda: results.append(step(7))))
    thread.join(WAIT)
    assert results == [("again", 7)] and calls == [7, 7]


def test_only_a_dsu_thread_control_takes_a_reboot_request():
    from pymoult._parking import control_for

    control = control_for(threading.current_thread())  # a plain thread: no reboot handler
    with pytest.raises(PymoultTypeError, match="a DSU_Thread is required to reboot"):
        control.request_reboot(None)
    assert control.reboot_request is None and not control.wants_point


def test_reboot_requested_inside_the_continuation_reboots_the_thread(spawn):
    runs = []

    class Worker(DSU_Thread):
        def sleeping_continuation_function(self):
            while not spawn.stop.is_set():
                staticUpdatePoint("in continuation")

        def main(self):
            runs.append(1)
            if len(runs) == 1:
                self.switch()

    thread = spawn(Worker())
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    future = resetThread(thread)
    thread.resume()
    assert future.result(WAIT) == 1
    thread.join(WAIT)
    assert runs == [1, 1]


def test_boundary_reboot_served_outside_the_boundary_fails_cleanly(spawn):
    inside = threading.Event()
    leave = threading.Event()

    @reboot_boundary
    def step():
        inside.set()
        leave.wait(WAIT)  # no update point inside: the next point is after the boundary

    def main():
        step()
        while not spawn.stop.is_set():
            staticUpdatePoint()

    thread = spawn(DSU_Thread(target=main))
    assert inside.wait(WAIT)
    future = rebootFunction(thread, step, lambda state: None, capture_state=lambda frame: None)
    leave.set()
    with pytest.raises(RebootError, match="it was no longer running when the thread reached"):
        future.result(WAIT)
    assert thread.is_alive() and thread.reboots == 0


def test_asynchronous_reset_of_a_thread_at_points_reboots_exactly_once(spawn):
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # make the point and the async exception race as hard as possible
    try:
        runs = []
        started = threading.Event()

        def main():
            runs.append(1)
            started.set()
            while not spawn.stop.is_set():
                staticUpdatePoint()

        thread = spawn(DSU_Thread(target=main))
        assert started.wait(WAIT)
        for expected in range(1, 51):
            started.clear()
            assert resetThread(thread, asynchronous=True).result(WAIT) == expected
            assert started.wait(WAIT)
        sys.setswitchinterval(old)
        thread.suspend()  # a stray second delivery would show as an extra run by now
        assert thread.wait_suspended(WAIT)
        assert thread.reboots == 50 and len(runs) == 51
        thread.resume()
    finally:
        sys.setswitchinterval(old)
