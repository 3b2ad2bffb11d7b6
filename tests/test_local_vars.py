import threading
import time

import pytest

from pymoult.errors import (PymoultTypeError, PymoultValueError, RollbackError,
                            TargetNotFoundError)
from pymoult.lowlevel.data_update import updateLocalVar, updateLocalVarInThread
from pymoult.lowlevel.journal import Journal

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


def blocked_worker(spawn, results):
    """A thread whose function waits on an event, then reports its local ``message``."""
    inside = threading.Event()
    go = threading.Event()

    def work(prefix):
        message = prefix + " old"
        inside.set()
        go.wait(WAIT)
        results.append(message)

    thread = spawn(threading.Thread(target=work, args=("x",)))
    assert inside.wait(WAIT)
    return thread, work, go


def test_local_of_a_frame_blocked_in_event_wait(spawn):
    results = []
    thread, work, go = blocked_worker(spawn, results)
    assert updateLocalVarInThread(thread, work, "message", "new") == 1
    go.set()
    thread.join(WAIT)
    assert results == ["new"]


def test_local_of_a_frame_sleeping_in_time_sleep(spawn):
    started = threading.Event()
    laps = []

    def poll():
        done = False
        started.set()
        while not done:
            time.sleep(0.001)  # the frame is blocked in sleep most of the time
            laps.append(1)
        return done

    thread = spawn(threading.Thread(target=poll))
    assert started.wait(WAIT)
    updateLocalVarInThread(thread, poll, "done", True)
    thread.join(WAIT)
    assert not thread.is_alive()


def test_local_of_a_busy_frame_and_an_argument(spawn):
    seen = []
    started = threading.Event()

    def spin(step):
        total = 0
        started.set()
        while total < 10_000_000:
            total += step
            if step == 5_000_000:
                seen.append(total)
                return

    thread = spawn(threading.Thread(target=spin, args=(1,)))
    assert started.wait(WAIT)
    updateLocalVarInThread(thread, spin, "step", 5_000_000)
    thread.join(WAIT)
    assert seen and seen[0] < 10_000_000 + 5_000_000


def test_cell_variables_update_the_closure(spawn):
    inside = threading.Event()
    go = threading.Event()
    results = []

    def outer():
        level = "old"

        def read():
            return level

        inside.set()
        go.wait(WAIT)
        results.append(read())

    thread = spawn(threading.Thread(target=outer))
    assert inside.wait(WAIT)
    updateLocalVarInThread(thread, outer, "level", "new")
    go.set()
    thread.join(WAIT)
    assert results == ["new"]


def test_update_local_var_reaches_every_other_thread(spawn):
    ready = threading.Barrier(3, timeout=WAIT)
    go = threading.Event()
    results = []

    def work():
        message = "old"
        ready.wait()
        go.wait(WAIT)
        results.append(message)

    threads = [spawn(threading.Thread(target=work)) for _ in range(2)]
    ready.wait()
    assert updateLocalVar(work, "message", "new") == 2
    go.set()
    for thread in threads:
        thread.join(WAIT)
    assert results == ["new", "new"]


def test_rollback_restores_the_old_value(spawn):
    results = []
    thread, work, go = blocked_worker(spawn, results)
    journal = Journal()
    with journal.recording():
        updateLocalVarInThread(thread, work, "message", "new")
    (operation,) = journal
    assert str(operation).startswith("set local 'message' of ")
    assert "(was 'x old')" in str(operation)
    journal.rollback()
    go.set()
    thread.join(WAIT)
    assert results == ["x old"]


def test_rollback_after_the_frame_exited_is_harmless(spawn):
    results = []
    thread, work, go = blocked_worker(spawn, results)
    journal = Journal()
    with journal.recording():
        updateLocalVarInThread(thread, work, "message", "new")
    go.set()
    thread.join(WAIT)
    journal.rollback()  # nothing left to restore
    assert results == ["new"]


def test_errors_name_what_is_wrong(spawn):
    results = []
    thread, work, go = blocked_worker(spawn, results)

    def idle(x):
        return x

    with pytest.raises(TargetNotFoundError, match=r"idle is not running in 'Thread-\d+"):
        updateLocalVarInThread(thread, idle, "x", 1)
    with pytest.raises(PymoultValueError,
                       match=r"has no local variable 'nope' \(its locals: "
                             r"\['go', 'inside', 'message', 'prefix', 'results'\]\)"):
        updateLocalVarInThread(thread, work, "nope", 1)
    with pytest.raises(PymoultTypeError, match="expected a thread"):
        updateLocalVarInThread("t", work, "message", 1)
    with pytest.raises(PymoultTypeError, match="name must be a str"):
        updateLocalVar(work, 3, 1)
    go.set()
    thread.join(WAIT)
    with pytest.raises(TargetNotFoundError, match="is not running in any other thread"):
        updateLocalVar(work, "message", 1)


def test_rolling_back_a_write_to_an_unbound_local_is_reported(spawn):
    inside = threading.Event()
    go = threading.Event()

    def work():
        inside.set()
        go.wait(WAIT)
        value = 1  # unbound when the update writes it
        return value

    thread = spawn(threading.Thread(target=work))
    assert inside.wait(WAIT)
    journal = Journal()
    with journal.recording():
        updateLocalVarInThread(thread, work, "value", 42)
    with pytest.raises(RollbackError,
                       match=r"set local 'value' of .*work in 'Thread-\d+ \(work\)'") as info:
        journal.rollback()
    assert "was unbound before the update" in str(info.value.failures[0][1])
    go.set()
    thread.join(WAIT)
