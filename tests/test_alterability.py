import functools
import threading
import types

import greenlet
import pytest

from pymoult import _parking, _stacks
from pymoult.errors import (DeadlockDetectedError, PymoultTypeError, PymoultValueError,
                            ThreadStateError)
from pymoult.lowlevel import alterability as alt
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


def start_looper(spawn, body=None, cls=DSU_Thread):
    """A thread looping ``body(); staticUpdatePoint('outside')`` until the test ends."""
    started = threading.Event()

    def main():
        started.set()
        while not spawn.stop.is_set():
            if body is not None:
                body()
            staticUpdatePoint("outside")

    thread = spawn(cls(target=main))
    assert started.wait(WAIT)
    return thread


def blocked_in(spawn, function_maker):
    """A thread blocked inside a function; returns (thread, release_event, function)."""
    inside = threading.Event()
    release = threading.Event()
    function = function_maker(inside, release)
    thread = spawn(threading.Thread(target=function))
    assert inside.wait(WAIT)
    return thread, release, function


def waiting_function(inside, release):
    def waiting():
        inside.set()
        release.wait(WAIT)
    return waiting


# -- static points ----------------------------------------------------------------------------


def test_static_points_of_several_threads(spawn):
    threads = [start_looper(spawn) for _ in range(3)]
    alt.setupWaitStaticPoints(threads)
    assert alt.waitStaticPoints(threads, timeout=WAIT)
    assert alt.checkStaticPointsReached(threads)
    assert set(alt.resumeSuspendedThreads(threads)) == set(threads)
    assert not alt.checkStaticPointsReached(threads)


def test_wait_static_points_asks_threads_not_yet_asked(spawn):
    thread = start_looper(spawn)
    assert alt.waitStaticPoints([thread], timeout=WAIT)
    alt.resumeSuspendedThreads([thread])


def test_wait_static_points_gives_up_after_its_patience(spawn):
    thread = spawn(DSU_Thread(target=lambda: spawn.stop.wait(WAIT)))  # never reaches a point
    with alt.patience(max_tries=2, sleep_time=0.01):
        assert alt.waitStaticPoints([thread]) is False
    assert not alt.checkStaticPointsReached([thread])
    alt.cleanFailedStaticPoints([thread])
    assert thread.resume() is False  # the request was withdrawn


def test_wait_static_points_for_yourself_is_a_deadlock(spawn):
    me = threading.current_thread()
    with pytest.raises(DeadlockDetectedError, match="cannot wait for static points"):
        alt.waitStaticPoints([me], timeout=1)


def test_static_point_functions_reject_bad_threads(spawn):
    thread = start_looper(spawn)
    with pytest.raises(PymoultTypeError, match="expected a list of threads, got the thread"):
        alt.setupWaitStaticPoints(thread)
    with pytest.raises(PymoultTypeError, match="expected threads, got 3"):
        alt.checkStaticPointsReached([3])


def test_plain_thread_parks_at_its_points(spawn):
    thread = start_looper(spawn, cls=threading.Thread)
    assert alt.wait_thread_suspended(thread, 0) is False  # nobody asked it to park
    alt.suspend_thread(thread)
    assert alt.wait_thread_suspended(thread, WAIT)
    assert alt.checkStaticPointsReached([thread])
    assert alt.resume_thread(thread)
    assert not alt.resume_thread(thread)


def test_patience_rejects_bad_values_and_nests():
    with pytest.raises(PymoultValueError):
        with alt.patience(max_tries=0):
            pass
    with pytest.raises(PymoultValueError):
        with alt.patience(sleep_time=-1):
            pass
    with alt.patience(max_tries=3, sleep_time=0.5):
        with alt.patience(sleep_time=0.25):
            assert alt._current_patience() == (3, 0.25)
        assert alt._current_patience() == (3, 0.5)
    assert alt._current_patience() == (alt.DEFAULT_MAX_TRIES, alt.DEFAULT_SLEEP_TIME)


def test_negative_timeout_is_refused(spawn):
    thread = start_looper(spawn)
    with pytest.raises(PymoultValueError, match="timeout must be >= 0"):
        alt.waitStaticPoints([thread], timeout=-1)


# -- stack inspection -------------------------------------------------------------------------


def test_is_function_in_stack_follows_the_call(spawn):
    thread, release, target = blocked_in(spawn, waiting_function)
    assert alt.isFunctionInStack(target, thread)
    assert alt.isFunctionInAnyStack(target)
    assert alt.isFunctionInAnyStack(target, [thread])
    assert not alt.isFunctionInAnyStack(target, [threading.current_thread()])
    assert alt.isAnyCodeInAnyStack([target.__code__])
    assert not alt.isFunctionInAnyStack(start_looper)
    release.set()
    thread.join(WAIT)
    assert not alt.isFunctionInAnyStack(target)


def test_decorated_functions_and_methods_are_seen(spawn):
    def deco(function):
        @functools.wraps(function)
        def wrapper(*args):
            return function(*args)
        return wrapper

    inside = threading.Event()
    release = threading.Event()

    class Service:
        @deco
        def handle(self):
            inside.set()
            release.wait(WAIT)

        @staticmethod
        def helper():
            pass

        @property
        def value(self):
            return 1

    service = Service()
    thread = spawn(threading.Thread(target=service.handle))
    assert inside.wait(WAIT)
    assert alt.isFunctionInAnyStack(Service.handle)
    assert alt.isFunctionInAnyStack(service.handle)
    assert alt.isFunctionInAnyStack(Service.handle.__wrapped__)
    assert alt.isClassInAnyStack(Service)
    assert not alt.isFunctionInAnyStack(Service.__dict__["helper"])
    assert not alt.isFunctionInAnyStack(Service.__dict__["value"])
    release.set()
    thread.join(WAIT)
    assert not alt.isClassInAnyStack(Service)


def test_frames_of_a_suspended_continuation_are_seen(spawn):
    paused = threading.Event()
    finish = threading.Event()

    def in_continuation():
        # suspend the continuation greenlet half-way through this function (by hand, with the
        # outcome protocol DSU_Thread.switch() expects)
        greenlet.getcurrent().parent.switch(("ok", "paused"))

    class Worker(DSU_Thread):
        def sleeping_continuation_function(self):
            in_continuation()

        def main(self):
            assert self.switch() == "paused"
            paused.set()
            finish.wait(WAIT)

    thread = spawn(Worker())
    assert paused.wait(WAIT)
    assert alt.isFunctionInStack(in_continuation, thread)
    assert alt.isFunctionInAnyStack(in_continuation)  # every stack, the hidden frames too
    assert alt.checkQuiescenceOfFunction(in_continuation) is False
    assert thread.ident in dict(_parking.hidden_frames())
    finish.set()
    thread.join(WAIT)
    assert thread.ident not in dict(_parking.hidden_frames())  # forgotten when the thread ends
    assert alt.checkQuiescenceOfFunction(in_continuation) is True


def test_stack_inspection_rejects_non_functions():
    with pytest.raises(PymoultTypeError, match="cannot tell when 3 is running"):
        alt.isFunctionInAnyStack(3)
    with pytest.raises(PymoultTypeError, match="expected a list of functions"):
        alt.checkQuiescenceOfFunctions(test_stack_inspection_rejects_non_functions)
    with pytest.raises(PymoultTypeError, match="expected a class"):
        alt.isClassInAnyStack(len)
    with pytest.raises(PymoultTypeError, match="expected a thread"):
        alt.isFunctionInStack(len, "main")


# -- quiescence -------------------------------------------------------------------------------


def test_check_quiescence_parks_threads_and_keeps_them_parked_when_quiescent(spawn):
    def busy():
        pass

    thread = start_looper(spawn)
    # first try only posts the requests; later tries see the thread parked outside busy()
    assert alt.waitStaticPoints([thread], timeout=WAIT)
    assert alt.checkQuiescenceOfFunction(busy, [thread])
    assert thread.is_suspended()
    alt.resumeSuspendedThreads([thread])


def test_check_quiescence_resumes_threads_when_the_function_is_running(spawn):
    def inner():
        staticUpdatePoint("inside")

    thread = spawn(DSU_Thread(target=lambda: [inner() for _ in iter(spawn.stop.is_set, True)]))
    assert alt.waitStaticPoints([thread], timeout=WAIT)  # it can only park inside inner()
    assert alt.checkQuiescenceOfFunctions([inner], [thread]) is False
    assert not thread.is_suspended()
    assert thread.resume() is False  # requests were withdrawn


def test_a_thread_parked_at_a_point_is_walked_from_the_frame_that_called_it(spawn):
    thread = start_looper(spawn)
    assert alt.waitStaticPoints([thread], timeout=WAIT)
    caller = _parking.point_callers()[thread.ident].frame
    assert caller.f_code.co_name == "main"  # start_looper's loop
    # above it only the point's own frames and the wait: not walked, never application code
    assert alt.checkQuiescenceOfFunctions([_parking.ThreadControl.at_point], [thread])
    alt.resumeSuspendedThreads([thread])
    assert thread.ident not in _parking.point_callers()  # released: walked whole again


def test_a_parked_stack_is_read_once_per_park_and_afresh_at_the_next(spawn):
    def inner_loop():
        staticUpdatePoint("deep")

    def body():
        inner_loop()

    thread = start_looper(spawn)
    assert alt.waitStaticPoints([thread], timeout=WAIT)
    parked = _parking.point_callers()[thread.ident]
    assert alt.checkQuiescenceOfFunctions([inner_loop], [thread])  # not on its stack
    summary = parked.codes()
    assert alt.checkQuiescenceOfFunctions([inner_loop], [thread])
    assert parked.codes() is summary  # the second check of the park read no frame
    assert [code.co_name for code in summary[1]][:1] == ["main"]
    alt.resumeSuspendedThreads([thread])
    assert alt.waitStaticPoints([thread], timeout=WAIT)
    again = _parking.point_callers()[thread.ident]
    assert again is not parked and again.codes() is not summary  # a new park, read anew
    alt.resumeSuspendedThreads([thread])

    def deep_main():
        while not spawn.stop.is_set():
            body()

    deep = spawn(DSU_Thread(target=deep_main))  # its only point: inside inner_loop
    assert alt.waitStaticPoints([deep], timeout=WAIT)
    caller = _parking.point_callers()[deep.ident]
    stacks = _stacks.thread_stacks([deep], from_points=True)
    assert stacks[deep.ident][0] is caller  # the stack read from the point's caller out
    assert [code.co_name for code in caller.codes()[1]][:3] == [
        "inner_loop", "body", "deep_main"]
    for function in (inner_loop, body):
        assert _stacks.running_code(_stacks.codes_of(function), stacks) is function.__code__
    assert _stacks.running_code(_stacks.codes_of(waiting_function), stacks) is None
    assert alt.checkQuiescenceOfFunctions([inner_loop], [deep]) is False  # and resumes it


def test_check_quiescence_without_threads_is_a_snapshot(spawn):
    thread, release, target = blocked_in(spawn, waiting_function)
    assert alt.checkQuiescenceOfFunction(target) is False
    release.set()
    thread.join(WAIT)
    assert alt.checkQuiescenceOfFunction(target) is True


def test_wait_quiescence_retries_until_the_function_has_left(spawn):
    go = threading.Event()
    parks_inside = []

    def phase():
        staticUpdatePoint("inside")

    def main():
        go.wait(WAIT)
        while not spawn.stop.is_set():
            if not parks_inside:
                parks_inside.append(1)
                phase()  # the first point after go is inside phase()
            staticUpdatePoint("outside")

    thread = spawn(DSU_Thread(target=main))
    thread.suspend()
    go.set()
    assert thread.wait_suspended(WAIT)
    assert alt.isFunctionInStack(phase, thread)
    with alt.patience(max_tries=10, sleep_time=0.001):
        # try 1 sees phase() running and resumes; try 2 parks the thread at "outside"
        assert alt.waitQuiescenceOfFunction(phase, [thread], timeout=WAIT) is True
    assert thread.is_suspended()
    assert "parked at 'outside'" in repr(thread)
    alt.resumeSuspendedThreads([thread])


def test_wait_quiescence_gives_up_and_resumes(spawn):
    def always():
        staticUpdatePoint("inside")

    thread = spawn(DSU_Thread(target=lambda: [always() for _ in iter(spawn.stop.is_set, True)]))
    with alt.patience(max_tries=3, sleep_time=0.01):
        assert alt.waitQuiescenceOfFunctions([always], [thread]) is False
    assert not thread.is_suspended()


def test_wait_quiescence_of_yourself_is_a_deadlock():
    with pytest.raises(DeadlockDetectedError):
        alt.waitQuiescenceOfFunction(make_module, [threading.current_thread()], timeout=1)


# -- forced quiescence ------------------------------------------------------------------------


def make_module():
    module = types.ModuleType("fq_app")
    module.log = []
    exec(
        "import threading\n"
        "inside = threading.Event()\n"
        "release = threading.Event()\n"
        "def handle(x, block=False):\n"
        "    if block:\n"
        "        inside.set()\n"
        "        release.wait(5)\n"
        "    log.append(('old', x))\n"
        "    return 'old'\n"
        "def fact(n):\n"
        "    return 1 if n <= 1 else n * fact(n - 1)\n",
        module.__dict__,
    )
    return module


def test_forced_quiescence_holds_new_callers_then_releases_them_into_the_new_version(spawn):
    app = make_module()
    original = app.handle
    running = spawn(threading.Thread(target=app.handle, args=(1, True)))
    assert app.inside.wait(WAIT)

    quiescent, can_continue, watcher = alt.setupForceQuiescence(app, "handle")
    assert not alt.checkForceQuiescence(quiescent)  # the running call is still inside
    results = []
    caller = spawn(threading.Thread(target=lambda: results.append(app.handle(2))))
    assert watcher.wait_held(1, WAIT)  # held at the gate
    assert app.log == []

    app.release.set()
    running.join(WAIT)
    assert alt.waitForceQuiescence(quiescent, timeout=WAIT)
    app.handle = lambda x, block=False: app.log.append(("new", x)) or "new"
    alt.cleanForceQuiescence(can_continue)
    caller.join(WAIT)
    assert results == ["new"]
    assert app.log == [("old", 1), ("new", 2)]
    assert app.handle is not original and app.handle is not watcher.gate


def test_forced_quiescence_failure_restores_the_original(spawn):
    app = make_module()
    original = app.handle
    quiescent, can_continue, watcher = alt.setupForceQuiescence(app, original)
    assert quiescent.is_set()  # nothing was running
    results = []
    caller = spawn(threading.Thread(target=lambda: results.append(app.handle(3))))
    assert watcher.wait_held(1, WAIT)
    alt.cleanFailedForceQuiescence(can_continue, watcher, app, "handle")
    caller.join(WAIT)
    assert results == ["old"]
    assert app.handle is original
    assert "released" in repr(watcher)


def test_forced_quiescence_lets_recursive_calls_through(spawn):
    app = make_module()
    inside = threading.Event()
    release = threading.Event()
    result = []
    original_fact = app.fact

    def slow_fact(n):
        if n == 3:
            inside.set()
            release.wait(WAIT)
        return 1 if n <= 1 else n * app.fact(n - 1)  # recursion goes through the module name

    app.fact = slow_fact
    thread = spawn(threading.Thread(target=lambda: result.append(app.fact(5))))
    assert inside.wait(WAIT)
    quiescent, can_continue, watcher = alt.setupForceQuiescence(app, "fact")
    release.set()
    thread.join(WAIT)
    assert result == [120]
    assert alt.waitForceQuiescence(quiescent, timeout=WAIT)
    alt.cleanForceQuiescence(can_continue)
    assert app.fact is slow_fact and original_fact(4) == 24


def test_wait_force_quiescence_times_out_while_a_call_stays(spawn):
    app = make_module()
    running = spawn(threading.Thread(target=app.handle, args=(1, True)))
    assert app.inside.wait(WAIT)
    quiescent, can_continue, watcher = alt.setupForceQuiescence(app, "handle")
    with alt.patience(max_tries=2, sleep_time=0.01):
        assert alt.waitForceQuiescence(quiescent) is False
    alt.cleanFailedForceQuiescence(can_continue, watcher, app, "handle")
    app.release.set()
    running.join(WAIT)


def test_forced_quiescence_rejects_bad_input():
    app = make_module()
    with pytest.raises(PymoultTypeError, match="expected a module"):
        alt.setupForceQuiescence("fq_app", "handle")
    with pytest.raises(PymoultValueError, match="has no attribute 'nothing'"):
        alt.setupForceQuiescence(app, "nothing")
    with pytest.raises(PymoultValueError,
                       match=r"is not bound as fq_app\.<lambda>; pass its name$"):
        alt.setupForceQuiescence(app, lambda: None)
    with pytest.raises(PymoultTypeError, match="fq_app.log is not callable"):
        alt.setupForceQuiescence(app, "log")
    with pytest.raises(PymoultTypeError, match="must be an event returned by setupForceQuiescence"):
        alt.checkForceQuiescence(threading.Event())
    q1, c1, w1 = alt.setupForceQuiescence(app, "handle")
    q2, c2, w2 = alt.setupForceQuiescence(app, "fact")
    with pytest.raises(PymoultValueError, match="different setups"):
        alt.cleanFailedForceQuiescence(c1, w2, app, "fact")
    alt.cleanFailedForceQuiescence(c1, w1, app, "handle")
    alt.cleanFailedForceQuiescence(c2, w2, app, "fact")


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


def test_ended_threads_make_waits_return_false_and_setup_post_nothing(spawn):
    live = spawn(DSU_Thread(
        target=lambda: [staticUpdatePoint() for _ in iter(spawn.stop.is_set, True)]))
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
