"""The idle cost of an update point rests on one global: it must be False whenever no request is
outstanding, whatever happened before (requests served, withdrawn, or orphaned by a thread end)."""

import threading

import pytest

from pymoult import _parking
from pymoult.lowlevel.alterability import (resume_thread, staticUpdatePoint, suspend_thread,
                                           update_point)
from pymoult.lowlevel.stack import resetThread
from pymoult.threads import DSU_Thread, set_active_update_function

pytestmark = pytest.mark.timeout(15)
WAIT = 5.0


def idle():
    return _parking._pending is False and not _parking._wanting


def looper(spawn, **kwargs):
    started = threading.Event()

    def main():
        started.set()
        while not spawn.stop.is_set():
            staticUpdatePoint()

    thread = spawn(DSU_Thread(target=main, **kwargs))
    assert started.wait(WAIT)
    return thread


def test_points_are_idle_after_suspend_and_resume(spawn):
    thread = looper(spawn)
    assert idle()
    thread.suspend()
    assert not idle()
    assert thread.wait_suspended(WAIT)
    thread.resume()
    assert idle()


def test_points_are_idle_after_a_served_reboot_and_active_update(spawn):
    thread = looper(spawn, active=True)
    resetThread(thread).result(WAIT)
    set_active_update_function(lambda: None, thread).result(WAIT)
    assert idle()


def test_passive_thread_with_a_pending_active_function_keeps_points_idle(spawn):
    thread = looper(spawn)
    future = set_active_update_function(lambda: None, thread)
    assert idle()  # a passive thread's function waits for start_active_update, not for points
    thread.set_active()
    future.result(WAIT)
    assert idle()


def test_points_are_idle_after_a_thread_ends_with_requests(spawn):
    go = threading.Event()
    thread = spawn(DSU_Thread(target=lambda: go.wait(WAIT)))
    thread.suspend()
    resetThread(thread)
    assert not idle()
    go.set()
    thread.join(WAIT)
    assert idle()


def test_plain_thread_suspension_is_withdrawn(spawn):
    go = threading.Event()
    thread = spawn(threading.Thread(target=lambda: go.wait(WAIT)))
    suspend_thread(thread)
    assert not idle()
    assert resume_thread(thread)
    assert idle()
    go.set()


def test_plain_thread_that_ends_without_reaching_a_point_does_not_keep_points_slow(spawn):
    go = threading.Event()
    thread = spawn(threading.Thread(target=lambda: go.wait(WAIT)))
    suspend_thread(thread)
    go.set()
    thread.join(WAIT)
    assert not idle()  # nothing has noticed yet: plain threads do not signal their end
    from pymoult.lowlevel.alterability import wait_thread_suspended


    assert wait_thread_suspended(thread, WAIT) is False  # noticed here
    assert idle()


def test_resume_all_prunes_ended_plain_threads(spawn):
    from pymoult.lowlevel.alterability import resumeSuspendedThreads

    go = threading.Event()
    thread = spawn(threading.Thread(target=lambda: go.wait(WAIT)))
    suspend_thread(thread)
    go.set()
    thread.join(WAIT)
    resumeSuspendedThreads()
    assert idle()


def test_update_point_is_the_same_point_without_a_name(spawn):
    started = threading.Event()

    def main():
        started.set()
        while not spawn.stop.is_set():
            update_point()

    thread = spawn(DSU_Thread(target=main))
    assert started.wait(WAIT)
    thread.suspend()
    assert thread.wait_suspended(WAIT)
    assert "parked" in repr(thread) and " at " not in repr(thread).split("dsu=")[1]
    thread.resume()
    assert idle()
