"""Suspending threads that have no update point: where they park, where they never park, and
what they do not run while suspended (pymoult._suspension through the public calls)."""

import importlib
import logging
import sys
import textwrap
import threading
import time

import pytest
from polling import wait_until

from pymoult.lowlevel.alterability import (resume_thread, staticUpdatePoint, suspend_thread,
                                           suspendThreads, threadsSuspended,
                                           wait_thread_suspended, whyNotSuspended)
from pymoult._parking import control_for
from pymoult.threads import DSU_Thread

WAIT = 10.0
#: How long a suspended thread is watched for running on (an observation, not a synchronisation).
WATCH = 0.2


def watch_unchanged(read):
    """``read()`` at the start and after WATCH seconds: True if it did not change."""
    before = read()
    threading.Event().wait(WATCH)
    return read() == before


def test_a_busy_plain_thread_parks_in_its_own_code_and_runs_nothing_until_resumed(spawn):
    counter = [0]

    def busy():
        while not spawn.stop.is_set():
            counter[0] += 1

    thread = spawn(threading.Thread(target=busy))
    assert wait_until(lambda: counter[0] > 0)
    suspend_thread(thread)
    assert wait_thread_suspended(thread, WAIT)
    assert watch_unchanged(lambda: counter[0])
    assert resume_thread(thread) is True
    before = counter[0]
    assert wait_until(lambda: counter[0] > before)


def test_a_thread_blocked_in_sleep_counts_as_suspended_and_does_not_finish_its_line(spawn):
    # time.sleep(...) and the append share one line: without per-instruction tracing the append
    # would run before the thread's next line event
    done = []
    sleeping = threading.Event()

    def sleeper():
        sleeping.set()
        time.sleep(0.3); done.append("after sleep")  # noqa: E702

    thread = spawn(threading.Thread(target=sleeper))
    assert sleeping.wait(WAIT)
    assert wait_until(lambda: sys._current_frames()[thread.ident].f_code is sleeper.__code__)
    suspend_thread(thread, grace=0)
    assert wait_thread_suspended(thread, 0.2)  # blocked: suspended before its sleep ends
    assert wait_until(lambda: control_for(thread).parked)  # the sleep ended: parked at once
    assert done == [] and thread.is_alive()
    resume_thread(thread)
    thread.join(WAIT)
    assert done == ["after sleep"]


def test_a_thread_waiting_on_an_event_counts_as_suspended_and_parks_when_it_wakes(spawn):
    ran = []
    go = threading.Event()

    def waiter():
        go.wait(WAIT)
        ran.append("woke")

    thread = spawn(threading.Thread(target=waiter))
    assert wait_until(lambda: "wait" in sys._current_frames()[thread.ident].f_code.co_name)
    suspend_thread(thread, grace=0)
    assert wait_thread_suspended(thread, WAIT)
    go.set()  # its wait ends: it finishes threading's code, then parks in waiter()
    assert wait_until(lambda: control_for(thread).parked)
    assert ran == []
    resume_thread(thread)
    thread.join(WAIT)
    assert ran == ["woke"]


def test_a_thread_with_update_points_parks_at_a_point_not_elsewhere(spawn):
    at_points = []

    def looper():
        while not spawn.stop.is_set():
            sum(range(50))
            staticUpdatePoint("loop")

    thread = spawn(DSU_Thread(target=looper))
    suspend_thread(thread)
    assert wait_thread_suspended(thread, WAIT)
    at_points.append(thread._pymoult_control.parked_at)
    assert at_points == ["loop"]


def test_points_only_suspension_does_not_catch_a_thread_without_points(spawn):
    thread = spawn(threading.Thread(target=lambda: spawn.stop.wait(WAIT)))
    suspend_thread(thread, anywhere=False)
    assert wait_thread_suspended(thread, 0.1) is False
    assert resume_thread(thread) is True


class SlowHandler(logging.Handler):
    """Application code that runs inside logging, with the handler's lock held."""

    def __init__(self):
        super().__init__()
        self.emitted = 0

    def emit(self, record):
        for _ in range(2000):
            pass
        self.emitted += 1


def test_a_thread_is_never_parked_holding_a_logging_lock(spawn):
    handler = SlowHandler()
    log = logging.getLogger("test_suspension_anywhere.slow")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)

    def logger_loop():
        while not spawn.stop.is_set():
            log.info("tick")

    try:
        thread = spawn(threading.Thread(target=logger_loop))
        assert wait_until(lambda: handler.emitted > 5)
        for _ in range(20):
            suspend_thread(thread)
            assert wait_thread_suspended(thread, WAIT)
            frame = sys._current_frames()[thread.ident]
            stack = []
            while frame is not None:
                stack.append(frame.f_code.co_filename)
                frame = frame.f_back
            assert not any("logging" in name for name in stack), stack
            assert handler.lock.acquire(timeout=WAIT)  # not held by the suspended thread
            handler.lock.release()
            resume_thread(thread)
    finally:
        log.removeHandler(handler)


def test_a_thread_is_never_parked_inside_an_import(spawn, tmp_path, monkeypatch):
    (tmp_path / "slow_import_mod.py").write_text(textwrap.dedent("""
        import threading
        started = threading.Event()
        release = threading.Event()
        started.set()
        while not release.is_set():
            sum(range(100))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("slow_import_mod", None)
    imported = []

    def importer():
        imported.append(importlib.import_module("slow_import_mod"))
        while not spawn.stop.is_set():
            sum(range(100))

    thread = spawn(threading.Thread(target=importer))
    assert wait_until(lambda: "slow_import_mod" in sys.modules
                      and sys.modules["slow_import_mod"].__dict__.get("started") is not None
                      and sys.modules["slow_import_mod"].started.is_set())
    module = sys.modules["slow_import_mod"]
    try:
        suspend_thread(thread, grace=0)
        assert wait_thread_suspended(thread, 0.3) is False  # runs module code inside the import
        [why] = whyNotSuspended([thread]).values()
        assert "called back from the import system" in why, why
        module.release.set()
        assert wait_thread_suspended(thread, WAIT)  # parks once the import is over
        assert imported == [module]
        import_done = threading.Event()
        threading.Thread(target=lambda: (importlib.import_module("json"), import_done.set()),
                         daemon=True).start()
        assert import_done.wait(WAIT)  # the import system's locks are free
    finally:
        module.release.set()
        resume_thread(thread)
        wait_until(lambda: imported)
        sys.modules.pop("slow_import_mod", None)


def test_suspend_threads_suspends_every_one_and_refuses_the_caller(spawn):
    threads = [spawn(threading.Thread(target=lambda: spawn.stop.wait(WAIT))) for _ in range(3)]
    assert suspendThreads(threads, timeout=WAIT)
    assert threadsSuspended(threads)
    for thread in threads:
        resume_thread(thread)
    assert not threadsSuspended(threads)
    from pymoult.errors import DeadlockDetectedError
    with pytest.raises(DeadlockDetectedError, match="would wait for itself"):
        suspendThreads([threading.current_thread()], timeout=0.1)


def test_a_resumed_thread_runs_at_full_speed_again_without_its_trap(spawn):
    from pymoult.threads import get_thread_trace
    thread = spawn(threading.Thread(target=lambda: spawn.stop.wait(WAIT)))
    suspend_thread(thread, grace=0)
    assert wait_thread_suspended(thread, WAIT)
    assert get_thread_trace(thread) is not None
    resume_thread(thread)
    assert get_thread_trace(thread) is None
