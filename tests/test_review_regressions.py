"""Regressions for concurrency and semantics bugs found in review, one test each."""

import threading

import pytest

from pymoult import _parking
from pymoult.errors import PymoultTypeError, PymoultValueError, RebootError, ThreadStateError
from pymoult.lowlevel import alterability as alt
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.stack import rebootFunction, reboot_boundary, resetThread
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


def test_request_left_by_an_ended_plain_thread_never_parks_the_next_thread_with_its_ident(spawn):
    first = spawn(threading.Thread(target=lambda: None))
    first.join(WAIT)
    go = threading.Event()
    second_started = threading.Event()
    passed = threading.Event()

    def body():
        second_started.set()
        go.wait(WAIT)
        staticUpdatePoint()
        passed.set()

    # a control registered for an ended thread, under the ident the next thread will get: this is
    # what a suspend request to a thread that ended before its point leaves behind
    stale = _parking.ThreadControl(first)
    second = threading.Thread(target=body)
    spawn(second)
    assert second_started.wait(WAIT)
    stale.ident = second.ident
    with _parking._registry_lock:
        _parking._controls[second.ident] = stale
    stale.suspend_requested = True
    stale._refresh()
    go.set()
    assert passed.wait(WAIT), "the thread parked on a request that was never for it"
    assert _parking._pending is False


def test_wait_suspended_before_start_leaves_the_thread_usable(spawn):
    thread = DSU_Thread(target=lambda: [staticUpdatePoint() for _ in iter(spawn.stop.is_set, True)])
    assert thread.wait_suspended(0.01) is False
    spawn(thread)
    assert "dsu=running" in repr(thread)
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    thread.resume()


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


def test_quiescence_sees_the_main_stack_while_the_continuation_runs(spawn):
    def critical(thread_self):
        thread_self.switch()  # the continuation runs while critical() is suspended below it

    class Worker(DSU_Thread):
        def sleeping_continuation_function(self):
            while not spawn.stop.is_set():
                staticUpdatePoint("in continuation")

        def main(self):
            critical(self)

    thread = spawn(Worker())
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    assert alt.isFunctionInStack(critical, thread)
    assert alt.checkQuiescenceOfFunction(critical, [thread]) is False
    thread.resume()


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


def test_ended_threads_make_waits_return_false_and_setup_post_nothing(spawn):
    live = spawn(DSU_Thread(target=lambda: [staticUpdatePoint() for _ in iter(spawn.stop.is_set, True)]))
    ended = spawn(DSU_Thread(target=lambda: None))
    ended.join(WAIT)
    assert alt.waitStaticPoints([live, ended], timeout=0.5) is False
    with pytest.raises(ThreadStateError, match="not running"):
        alt.setupWaitStaticPoints([live, ended])
    assert live.resume() is False  # nothing was posted to the live thread


@pytest.mark.parametrize("call", [
    lambda t: t.wait_suspended("1"),
    lambda t: alt.waitStaticPoints([t], timeout="1"),
])
def test_bad_timeouts_are_type_errors(spawn, call):
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))
    with pytest.raises(PymoultTypeError, match="must be a number of seconds or None, got '1'"):
        call(thread)


def test_bad_values_are_refused(spawn):
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))
    with pytest.raises(PymoultValueError, match="timeout must be >= 0"):
        thread.wait_suspended(-1)
    with pytest.raises(PymoultValueError, match="max_tries must be a positive int, got True"):
        with alt.patience(max_tries=True):
            pass
    with pytest.raises(PymoultTypeError, match="sleep_time must be a number"):
        with alt.patience(sleep_time="x"):
            pass
    with pytest.raises(PymoultTypeError, match="expected a list of threads, got 'abc'"):
        alt.waitStaticPoints("abc")
