"""Tests of the pymoult._thread_trace package: tracing another thread without its help."""

import logging
import os
import sys
import threading
import time

import pytest

from pymoult import _cpython
from pymoult import _thread_trace as tt
from pymoult.errors import PymoultTypeError, ThreadStateError, UnsupportedError

T = 5.0  # seconds: every wait of these tests is bounded by this


# ---------------------------------------------------------------------------------------------
# Helpers


class Ctx:
    """Starts the test's threads and always stops, untraces and joins them."""

    def __init__(self):
        self.stop = threading.Event()
        self.flag = [False]  # stop flag for loops that must not call anything
        self.threads = []

    def spawn(self, fn, *args, name=None):
        t = threading.Thread(target=fn, args=(self,) + args, name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def close(self):
        self.stop.set()
        self.flag[0] = True
        for t in self.threads:
            try:
                tt.set_trace(t, None)
            except Exception:
                pass
        for t in self.threads:
            t.join(T)
        alive = [t for t in self.threads if t.is_alive()]
        assert not alive, "threads did not stop: %r" % (alive,)


@pytest.fixture
def ctx():
    c = Ctx()
    try:
        yield c
    finally:
        c.close()


class Recorder:
    """A trace function recording (event, co_name, lineno, arg, thread ident, filename);
    returns itself, so it is also the local trace of every frame it sees. ``on_call`` may pick
    another local trace."""

    def __init__(self, on_call=None, raise_on=None):
        self.events = []
        self.cond = threading.Condition()
        self.on_call = on_call
        self.raise_on = raise_on

    def __call__(self, frame, event, arg):
        with self.cond:
            self.events.append(
                (event, frame.f_code.co_name, frame.f_lineno, arg, threading.get_ident(),
                 frame.f_code.co_filename)
            )
            self.cond.notify_all()
        if self.raise_on is not None and event in self.raise_on:
            raise RuntimeError("boom from the trace")
        if event == "call" and self.on_call is not None:
            return self.on_call(frame)
        return self

    def wait_for(self, pred, timeout=T):
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.events), timeout)

    def count(self):
        with self.cond:
            return len(self.events)

    def of(self, co_name, event=None):
        with self.cond:
            return [e for e in self.events if e[1] == co_name and (event is None or e[0] == event)]

    def idents(self):
        with self.cond:
            return {e[4] for e in self.events}


def has(co_name, event, n=1):
    return lambda events: sum(1 for e in events if e[1] == co_name and e[0] == event) >= n


def wait_until_blocked_in(thread, co_name, timeout=T):
    """Poll (bounded) until the innermost frame of *thread* is a frame of *co_name*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident)
        if frame is not None and frame.f_code.co_name == co_name:
            return True
        time.sleep(0.001)
    return False


class Rounds:
    """A worker that runs one round of a known loop each time it is asked, and parks in between."""

    def __init__(self, n=200):
        self.req = threading.Event()
        self.done = threading.Event()
        self.n = n
        self.rounds = 0
        self.gettrace = []  # sys.gettrace() seen by the worker after each round

    def run(self, ctx):
        while not ctx.stop.is_set():
            if not self.req.wait(0.05):
                continue
            self.req.clear()
            total = 0
            for i in range(self.n):
                total += i
            self.rounds += 1
            self.gettrace.append(sys.gettrace())
            self.done.set()

    def round(self):
        self.done.clear()
        self.req.set()
        assert self.done.wait(T), "worker did not finish its round"


def callee(x):
    y = x + 1
    z = y * 2
    return z


def raiser():
    a = 1  # noqa: F841 (a line event before the raise)
    raise ValueError("expected")


def catcher():
    try:
        raiser()
    except ValueError:
        return "caught"


def monitoring_tool_ids():
    return [i for i in range(6) if sys.monitoring.get_tool(i) == "pymoult"]


# ---------------------------------------------------------------------------------------------
# Backend


@pytest.mark.timeout(10)
def test_backend_matches_version():
    if sys.version_info >= (3, 12):
        assert tt.BACKEND == "monitoring"
    else:
        assert tt.BACKEND == "ctypes"


# ---------------------------------------------------------------------------------------------
# Reaching threads that call nothing


def busy_multi_line(ctx, started):
    started.set()
    n = 0
    while not ctx.flag[0]:
        n += 1


def busy_one_line(ctx, started):
    started.set()
    while not ctx.flag[0]: pass  # noqa: E701 - the point: a one-line loop calling nothing


@pytest.mark.timeout(10)
@pytest.mark.parametrize("worker", [busy_multi_line, busy_one_line])
def test_busy_loop_gets_line_events_without_calling_anything(ctx, worker):
    started = threading.Event()
    t = ctx.spawn(worker, started)
    assert started.wait(T)
    assert wait_until_blocked_in(t, worker.__name__)
    rec = Recorder()
    tt.set_trace(t, rec)
    assert tt.get_trace(t) is rec
    # The loop frame was already running: it gets line events, several (one per iteration).
    assert rec.wait_for(has(worker.__name__, "line", 5))
    assert rec.idents() == {t.ident}
    assert not rec.of(worker.__name__, "call")


@pytest.mark.timeout(10)
def test_thread_blocked_in_event_wait_gets_events_when_it_resumes(ctx):
    go = threading.Event()
    after = []

    def worker(ctx):
        go.wait(T)
        after.append(1)
        after.append(2)

    t = ctx.spawn(worker)
    assert wait_until_blocked_in(t, "wait")  # Condition.wait, inside Event.wait
    rec = Recorder()
    tt.set_trace(t, rec)
    go.set()
    assert rec.wait_for(has("worker", "line", 2))
    assert rec.of("worker", "return")
    assert rec.idents() == {t.ident}


@pytest.mark.timeout(10)
def test_thread_blocked_in_sleep_gets_events_when_it_resumes(ctx):
    started = threading.Event()
    release = threading.Event()

    def worker(ctx):
        started.set()
        while not release.is_set():  # blocked in sleep, until the test has installed the trace
            time.sleep(0.005)
        x = 1
        return x

    t = ctx.spawn(worker)
    assert started.wait(T)
    assert wait_until_blocked_in(t, "worker")
    rec = Recorder()
    tt.set_trace(t, rec)
    release.set()
    assert rec.wait_for(has("worker", "return"))
    lines = [e[2] for e in rec.of("worker", "line")]
    assert lines, rec.events
    assert rec.of("worker", "return")[-1][3] == 1


# ---------------------------------------------------------------------------------------------
# 'call' events and local traces


@pytest.mark.timeout(10)
def test_new_calls_give_call_events_and_local_trace_gets_line_and_return(ctx):
    local = Recorder()
    rec = Recorder(on_call=lambda frame: local if frame.f_code.co_name == "callee" else None)
    go = threading.Event()
    result = []

    def worker(ctx):
        go.wait(T)
        result.append(callee(20))

    t = ctx.spawn(worker)
    assert wait_until_blocked_in(t, "wait")
    tt.set_trace(t, rec)
    go.set()
    assert rec.wait_for(has("worker", "return"))
    assert result == [42]
    assert [e[3] for e in rec.of("callee", "call")] == [None]
    assert len(local.of("callee", "line")) == 3
    returns = local.of("callee", "return")
    assert [e[3] for e in returns] == [42]
    # The global trace is not the local trace of callee: it saw only its 'call'.
    assert {e[0] for e in rec.of("callee")} == {"call"}


@pytest.mark.timeout(10)
def test_call_event_returning_none_stops_local_tracing_of_that_frame(ctx):
    rec = Recorder(on_call=lambda frame: None)
    go = threading.Event()

    def worker(ctx):
        go.wait(T)
        callee(1)
        callee(2)

    t = ctx.spawn(worker)
    assert wait_until_blocked_in(t, "wait")
    tt.set_trace(t, rec)
    go.set()
    assert rec.wait_for(has("worker", "return"))
    assert len(rec.of("callee", "call")) == 2
    assert not [e for e in rec.of("callee") if e[0] != "call"]


@pytest.mark.timeout(10)
def test_local_trace_returning_none_stops_tracing_that_frame(ctx):
    seen = []

    def local(frame, event, arg):
        seen.append(event)
        return None  # stop after the first event

    rec = Recorder(on_call=lambda frame: local if frame.f_code.co_name == "callee" else None)
    go = threading.Event()

    def worker(ctx):
        go.wait(T)
        callee(1)

    t = ctx.spawn(worker)
    assert wait_until_blocked_in(t, "wait")
    tt.set_trace(t, rec)
    go.set()
    assert rec.wait_for(has("worker", "return"))
    assert seen == ["line"]


@pytest.mark.timeout(10)
def test_exception_events_reach_the_local_trace(ctx):
    local = Recorder()
    rec = Recorder(on_call=lambda frame: local if frame.f_code.co_name in ("raiser", "catcher")
                   else None)
    go = threading.Event()
    result = []

    def worker(ctx):
        go.wait(T)
        result.append(catcher())

    t = ctx.spawn(worker)
    assert wait_until_blocked_in(t, "wait")
    tt.set_trace(t, rec)
    go.set()
    assert rec.wait_for(has("worker", "return"))
    assert result == ["caught"]
    exc = local.of("raiser", "exception")
    assert len(exc) == 1
    etype, value, tb = exc[0][3]
    assert etype is ValueError and isinstance(value, ValueError) and tb is not None
    assert [e[3] for e in local.of("raiser", "return")] == [None]  # left by the exception
    assert local.of("catcher", "exception")  # propagated into the caller
    assert [e[3] for e in local.of("catcher", "return")] == ["caught"]


@pytest.mark.timeout(10)
def test_generator_yield_gives_return_and_resume_gives_call(ctx):
    local = Recorder()
    rec = Recorder(on_call=lambda frame: local if frame.f_code.co_name == "gen" else None)
    go = threading.Event()
    result = []

    def gen():
        yield 1
        yield 2

    def worker(ctx):
        go.wait(T)
        result.extend(gen())

    t = ctx.spawn(worker)
    assert wait_until_blocked_in(t, "wait")
    tt.set_trace(t, rec)
    go.set()
    assert rec.wait_for(has("worker", "return"))
    assert result == [1, 2]
    assert len(rec.of("gen", "call")) == 3  # start + two resumes
    assert [e[3] for e in local.of("gen", "return")] == [1, 2, None]


# ---------------------------------------------------------------------------------------------
# Removal, isolation, several threads


@pytest.mark.timeout(10)
def test_removal_stops_events(ctx):
    w = Rounds()
    t = ctx.spawn(w.run)
    rec = Recorder()
    tt.set_trace(t, rec)
    w.round()
    assert len(rec.of("run", "line")) >= w.n  # one per iteration at least
    tt.set_trace(t, None)  # the worker is parked between rounds: no event in flight
    assert tt.get_trace(t) is None
    before = rec.count()
    w.round()
    w.round()
    assert rec.count() == before
    assert w.gettrace[-1] is None
    assert t.ident not in tt.backend.traced_idents()
    if tt.BACKEND == "monitoring":
        assert monitoring_tool_ids() == []  # tool id released: nothing instrumented any more


@pytest.mark.timeout(10)
def test_untraced_thread_running_the_same_code_gets_no_events(ctx):
    w1, w2 = Rounds(), Rounds()
    t1 = ctx.spawn(w1.run)
    t2 = ctx.spawn(w2.run)
    rec = Recorder()
    tt.set_trace(t1, rec)
    for _ in range(3):
        w1.round()
        w2.round()
    assert w2.rounds == 3
    assert rec.of("run", "line")
    assert rec.idents() == {t1.ident}
    assert tt.get_trace(t2) is None


@pytest.mark.timeout(10)
def test_two_threads_traced_with_different_traces(ctx):
    w1, w2 = Rounds(), Rounds()
    t1 = ctx.spawn(w1.run)
    t2 = ctx.spawn(w2.run)
    r1, r2 = Recorder(), Recorder()
    tt.set_trace(t1, r1)
    tt.set_trace(t2, r2)
    assert tt.get_trace(t1) is r1 and tt.get_trace(t2) is r2
    w1.round()
    w2.round()
    assert r1.idents() == {t1.ident} and r2.idents() == {t2.ident}
    assert len(r1.of("run", "line")) >= w1.n and len(r2.of("run", "line")) >= w2.n
    tt.set_trace(t1, None)
    n1, n2 = r1.count(), r2.count()
    w1.round()
    w2.round()
    assert r1.count() == n1 and r2.count() > n2  # the other one is still traced
    tt.set_trace(t2, None)
    assert tt.backend.traced_idents().isdisjoint({t1.ident, t2.ident})


@pytest.mark.timeout(10)
def test_replacing_a_trace(ctx):
    w = Rounds()
    t = ctx.spawn(w.run)
    a, b = Recorder(), Recorder()
    tt.set_trace(t, a)
    w.round()
    tt.set_trace(t, b)
    assert tt.get_trace(t) is b
    n = a.count()
    w.round()
    assert a.count() == n
    assert len(b.of("run", "line")) >= w.n


@pytest.mark.timeout(10)
def test_trace_can_remove_itself(ctx):
    w = Rounds()
    t = ctx.spawn(w.run)
    calls = []

    def once(frame, event, arg):
        calls.append(event)
        tt.set_trace(threading.current_thread(), None)
        return once

    tt.set_trace(t, once)
    w.round()
    w.round()
    assert len(calls) == 1
    assert tt.get_trace(t) is None
    assert w.gettrace[-1] is None


@pytest.mark.timeout(10)
def test_tracing_the_current_thread(ctx):
    rec = Recorder(on_call=lambda frame: rec if frame.f_code.co_name == "callee" else None)
    done = threading.Event()
    out = []

    def worker(ctx):
        tt.set_trace(threading.current_thread(), rec)
        a = callee(1)
        out.append(a)
        tt.set_trace(threading.current_thread(), None)
        out.append(tt.get_trace(threading.current_thread()))
        done.set()

    ctx.spawn(worker)
    assert done.wait(T)
    assert out == [4, None]
    assert rec.of("worker", "line")
    assert rec.of("callee", "call") and rec.of("callee", "return")
    # Nothing of the package's own machinery (nor what it calls) reaches the trace.
    machinery = os.path.dirname(tt.__file__) + os.sep
    assert not [e for e in rec.events
                if e[5].startswith(machinery) or e[1] in ("set_trace", "is_alive")]


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.timeout(10)
def test_trace_raising_is_logged_and_removed_and_target_keeps_running(ctx, caplog):
    caplog.set_level(logging.ERROR, logger="pymoult")
    w = Rounds()
    t = ctx.spawn(w.run, name="victim")
    rec = Recorder(raise_on={"line"})
    tt.set_trace(t, rec)
    w.round()
    assert rec.count() == 1  # removed at its first failure
    assert tt.get_trace(t) is None
    assert t.ident not in tt.backend.traced_idents()
    w.round()
    w.round()
    assert w.rounds == 3 and t.is_alive()
    assert w.gettrace[-1] is None
    records = [r for r in caplog.records if r.name == "pymoult"]
    assert len(records) == 1
    assert records[0].exc_info is not None and "boom from the trace" in str(records[0].exc_info[1])
    assert "victim" in records[0].getMessage()
    if tt.BACKEND == "monitoring":
        assert monitoring_tool_ids() == []


@pytest.mark.timeout(10)
def test_unstarted_thread_is_refused():
    t = threading.Thread(target=lambda: None, name="never-started")
    with pytest.raises(ThreadStateError, match="never-started"):
        tt.set_trace(t, Recorder())
    assert tt.get_trace(t) is None
    tt.set_trace(t, None)  # removing nothing is fine


@pytest.mark.timeout(10)
def test_dead_thread_is_refused():
    t = threading.Thread(target=lambda: None, name="already-dead")
    t.start()
    t.join(T)
    assert not t.is_alive()
    with pytest.raises(ThreadStateError, match="already-dead") as info:
        tt.set_trace(t, Recorder())
    assert isinstance(info.value, RuntimeError)
    assert tt.get_trace(t) is None
    tt.set_trace(t, None)


@pytest.mark.timeout(10)
def test_non_callable_trace_is_refused(ctx):
    w = Rounds()
    t = ctx.spawn(w.run)
    with pytest.raises(PymoultTypeError, match="not-a-function") as info:
        tt.set_trace(t, "not-a-function")
    assert isinstance(info.value, TypeError)
    assert tt.get_trace(t) is None


@pytest.mark.timeout(10)
def test_non_thread_is_refused():
    with pytest.raises(PymoultTypeError, match="12345"):
        tt.set_trace(12345, Recorder())
    with pytest.raises(PymoultTypeError):
        tt.set_trace(threading.get_ident(), None)
    with pytest.raises(PymoultTypeError):
        tt.get_trace("thread")


@pytest.mark.timeout(10)
def test_thread_ending_while_traced_leaves_nothing_behind(ctx):
    go = threading.Event()

    def worker(ctx):
        go.wait(T)

    t = ctx.spawn(worker)
    assert wait_until_blocked_in(t, "wait")
    rec = Recorder()
    tt.set_trace(t, rec)
    ident = t.ident
    go.set()
    t.join(T)
    assert not t.is_alive()
    assert rec.wait_for(has("worker", "return"))
    # Dropped by the thread itself when its outermost frame returned, before any prune.
    assert ident not in tt.backend.traced_idents()
    if tt.BACKEND == "monitoring":
        assert monitoring_tool_ids() == []
    assert tt.get_trace(t) is None


class Reboot(BaseException):
    """Control flow, like pymoult.threads.RebootException."""


@pytest.mark.timeout(10)
def test_base_exception_from_the_trace(ctx, caplog):
    """3.12+: passed on to the thread (like sys.settrace); 3.10/3.11: cannot be, logged and dropped.
    The trace is removed either way."""
    caplog.set_level(logging.ERROR, logger="pymoult")
    go = threading.Event()
    outcome = []

    def worker(ctx):
        try:
            go.wait(T)
            for i in range(100):
                pass
            outcome.append("finished")
        except Reboot:
            outcome.append("rebooted")

    def trace(frame, event, arg):
        if event == "line" and frame.f_code.co_name == "worker":
            raise Reboot()
        return trace

    t = ctx.spawn(worker)
    assert wait_until_blocked_in(t, "wait")
    tt.set_trace(t, trace)
    go.set()
    t.join(T)
    assert not t.is_alive()
    assert tt.get_trace(t) is None
    records = [r for r in caplog.records if r.name == "pymoult"]
    if tt.BACKEND == "monitoring":
        assert outcome == ["rebooted"]
        assert records == []
    else:
        assert outcome == ["finished"]
        assert len(records) == 1 and isinstance(records[0].exc_info[1], Reboot)


def chain(n):
    if n:
        return chain(n - 1) + 1
    return 0


@pytest.mark.timeout(30)
def test_install_replace_remove_storm(ctx):
    """Many installs, replacements and removals from two controller threads on two busy threads
    that keep calling, returning and raising, while short threads come and go: no crash, no lost
    thread, clean state at the end."""
    flag = ctx.flag
    progress = [0, 0]

    def busy(ctx, slot):
        while not flag[0]:
            chain(5)
            try:
                raiser()
            except ValueError:
                pass
            progress[slot] += 1

    targets = [ctx.spawn(busy, 0), ctx.spawn(busy, 1)]
    recs = [Recorder(), Recorder()]
    errors = []

    def controller(ctx, k):
        try:
            for i in range(150):
                t = targets[(i + k) % 2]
                if i % 3 == 2:
                    tt.set_trace(t, None)
                else:
                    tt.set_trace(t, recs[(i + k) % 2])
                tt.get_trace(t)
        except BaseException as exc:  # reported below
            errors.append(exc)

    controllers = [ctx.spawn(controller, 0), ctx.spawn(controller, 1)]
    # Meanwhile, threads start and end: thread states without a frame, and freed ones, in the list
    # the ctypes backend walks.
    deadline = time.monotonic() + 20
    while any(c.is_alive() for c in controllers) and time.monotonic() < deadline:
        short = threading.Thread(target=callee, args=(1,))
        short.start()
        short.join(T)
        assert not short.is_alive()
    for c in controllers:
        c.join(T)
    assert not any(c.is_alive() for c in controllers)
    assert errors == []
    for t in targets:
        tt.set_trace(t, None)
        assert tt.get_trace(t) is None
    before = list(progress)
    # Both workers still run: wait (bounded) until each made progress after the storm.
    deadline = time.monotonic() + T
    while time.monotonic() < deadline and not all(p > b + 10 for p, b in zip(progress, before)):
        time.sleep(0.005)
    assert all(p > b + 10 for p, b in zip(progress, before))
    assert recs[0].idents() <= {targets[0].ident} and recs[1].idents() <= {targets[1].ident}
    assert tt.backend.traced_idents().isdisjoint({t.ident for t in targets})
    if tt.BACKEND == "monitoring":
        assert monitoring_tool_ids() == []


@pytest.mark.timeout(10)
def test_missing_backend_support_raises_unsupported(ctx, monkeypatch):
    w = Rounds()
    t = ctx.spawn(w.run)
    monkeypatch.setattr(tt.backend, "UNSUPPORTED", "this Python does not export _PyEval_SetTrace")
    with pytest.raises(UnsupportedError, match="_PyEval_SetTrace") as info:
        tt.set_trace(t, Recorder())
    assert isinstance(info.value, NotImplementedError)
    tt.set_trace(t, None)  # removing is always possible
    assert tt.get_trace(t) is None


@pytest.mark.timeout(10)
@pytest.mark.skipif(tt.BACKEND != "monitoring",
                    reason="sys.monitoring tool ids exist on 3.12+ only")
def test_no_free_monitoring_tool_id(ctx):
    w = Rounds()
    t = ctx.spawn(w.run)
    taken = []
    try:
        for i in (3, 4, 5):
            if sys.monitoring.get_tool(i) is None:
                sys.monitoring.use_tool_id(i, "someone-else")
                taken.append(i)
        with pytest.raises(UnsupportedError, match="someone-else"):
            tt.set_trace(t, Recorder())
        assert tt.get_trace(t) is None
    finally:
        for i in taken:
            sys.monitoring.free_tool_id(i)
    rec = Recorder()
    tt.set_trace(t, rec)  # works again once an id is free
    w.round()
    assert rec.of("run", "line")


class OpcodeCounter:
    """Counts, through ``sys.settrace`` in this thread, the bytecodes run in frames of *code*, and
    records every other Python function called meanwhile."""

    def __init__(self, code):
        self.code = code
        self.opcodes = 0
        self.others = []

    def __call__(self, frame, event, arg):
        if event == "call":
            if frame.f_code is not self.code:
                self.others.append(frame.f_code.co_name)
                return None
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        elif event == "opcode":
            self.opcodes += 1
        return self


def walk_in_this_thread():
    """(bytecodes run by tt.backend.snapshot, other Python functions it called, its snapshot)."""
    counter = OpcodeCounter(tt.backend.snapshot.__code__)
    interp = tt.backend.interpreter_get()
    with _cpython.pause_gc():  # as its callers do: a collection would run Python callbacks
        sys.settrace(counter)
        try:
            snapshot = tt.backend.snapshot(interp)
        finally:
            sys.settrace(None)
    for _tstate, frame in snapshot[1:]:
        if frame:
            tt.backend.dec_ref(frame)
    return counter.opcodes, counter.others, snapshot


@pytest.mark.timeout(30)
@pytest.mark.skipif(tt.BACKEND != "ctypes", reason="the thread-state walk is the ctypes backend's")
def test_the_thread_state_walk_runs_no_bytecode_per_thread_state(ctx):
    """The walk reads pointers to thread states that their threads free when they end; only the
    GIL keeps them valid, and the eval loop may hand the GIL over between any two bytecodes. So
    the walk runs the same bytecodes whatever the number of threads (each step is done in C) and
    calls no Python function."""
    parked = threading.Barrier(11, timeout=T)

    def park(ctx):
        parked.wait()
        ctx.stop.wait(T)

    few, others, snapshot = walk_in_this_thread()
    assert others == []
    for _ in range(10):
        ctx.spawn(park)
    parked.wait()
    many, others, snapshot = walk_in_this_thread()
    assert others == []
    assert few == many
    frames, pairs = snapshot[0], snapshot[1:]
    assert len(pairs) >= 11  # this thread and the ten parked ones, at least
    tops = {id(frame) for frame in frames.values()}
    assert {frame for _tstate, frame in pairs if frame} <= tops  # the same instant
    assert all(tstate for tstate, _frame in pairs)
