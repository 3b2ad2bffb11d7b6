"""Update points and the per-thread requests that park threads at them.

Mechanism
---------
``staticUpdatePoint()`` must cost next to nothing when no update is pending, so its fast path is a
single test of the module global ``_pending``: no thread lookup, no attribute access. ``_pending``
is True exactly while at least one thread has an outstanding request (suspend, reboot, an active
update function for an active thread); only then does a point look up the calling thread's
:class:`ThreadControl` and serve the request.

Every thread that is asked for something gets one :class:`ThreadControl` (a ``DSU_Thread`` owns
one from birth; a plain ``threading.Thread`` or the main thread gets one on first request). Its
state lives under one ``Condition``: the requester sets a flag and waits on the condition; the
thread, at its next point, serves the flag and notifies. Neither side polls; the one exception
is a wait on a *plain* thread, which re-checks every 50 ms whether the thread has ended (plain
threads give no signal when they end; DSU_Threads do).

This module is private: ``pymoult.threads`` and ``pymoult.lowlevel.alterability`` expose it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from types import CodeType, FrameType, MappingProxyType
from typing import Any, Literal, NamedTuple, overload

from . import _suspension
from ._suspension import TraceFunction
from .errors import (ActiveUpdateError, DeadlockDetectedError, PymoultTypeError,
                     PymoultValueError, ThreadStateError)

logger = logging.getLogger("pymoult")

_get_ident = threading.get_ident

#: True while some thread has a request to serve at its next update point. Read by every point.
_pending = False

_registry_lock = threading.Lock()
#: thread ident -> ThreadControl of the live thread with that ident
_controls: dict[int, ThreadControl] = {}

# Threads with Python frames that sys._current_frames() does not show (a DSU_Thread whose
# continuation has run: a suspended greenlet's frames): ident -> a function returning them.
# Quiescence checks walk these too; only such threads are asked (not every thread, every check).
_hidden_frames: dict[int, Callable[[], list[FrameType]]] = {}


def add_hidden_frames(ident: int, frames_of: Callable[[], list[FrameType]]) -> None:
    """From now on, quiescence checks also walk ``frames_of()`` for thread ``ident``."""
    _hidden_frames[ident] = frames_of


def remove_hidden_frames(ident: int | None) -> None:
    """Thread ``ident`` has no hidden frames any more (its continuation ended)."""
    if ident is not None:
        _hidden_frames.pop(ident, None)


def hidden_frames() -> list[tuple[int, Callable[[], list[FrameType]]]]:
    """``[(ident, frames_of)]`` of the threads that have frames ``_current_frames`` misses."""
    return list(_hidden_frames.items())  # one C call: a consistent copy under the GIL


class ThreadBase(NamedTuple):
    """The bottom of a DSU_Thread's stack: the frame of the method that calls its main
    (``DSU_Thread._run_mains``) and every frame below it (``run``, threading's bootstrap)."""

    frame: FrameType
    #: the code objects of those frames, innermost first: one tuple object for every base that
    #: holds the same ones (a quiescence check decides once per such tuple)
    codes: tuple[CodeType, ...]


# The bases of the live DSU_Threads, by ident. These frames are Pymoult's and threading's own (and
# a subclass's ``run``, if it overrides it), and stay the same frames, running the same code, for
# the thread's whole life (a frame that has not returned keeps its callers): their codes are read
# once, when the thread starts, and a quiescence check that looks for none of them stops its walk
# there (pymoult._stacks).
_thread_bases: dict[int, ThreadBase] = {}
#: One tuple per distinct base (sharing it only saves work: bounded, emptied when full).
_base_codes: dict[tuple[CodeType, ...], tuple[CodeType, ...]] = {}
_BASE_CODES_KEPT = 64


def add_thread_base(ident: int, frame: FrameType) -> None:
    """``frame`` and its callers are thread ``ident``'s base, until :func:`remove_thread_base`."""
    codes: list[CodeType] = []
    walk: FrameType | None = frame
    while walk is not None:
        codes.append(walk.f_code)
        walk = walk.f_back
    key = tuple(codes)
    if len(_base_codes) >= _BASE_CODES_KEPT and key not in _base_codes:
        _base_codes.clear()
    _thread_bases[ident] = ThreadBase(frame, _base_codes.setdefault(key, key))


def remove_thread_base(ident: int | None) -> None:
    """Thread ``ident``'s base frame is returning: forget it (and let it go)."""
    if ident is not None:
        _thread_bases.pop(ident, None)


def thread_bases() -> Mapping[int, ThreadBase]:
    """``{ident: ThreadBase}`` of the live DSU_Threads (read-only, live)."""
    return _bases_view


_bases_view = MappingProxyType(_thread_bases)


# Threads parked at a static update point: ident -> StackSummary. Above the frame that called the
# point are only the point's own frames and the wait (Pymoult's and threading's), which cannot be
# running application code: a quiescence check looks at the thread's stack from there.
_point_callers: dict[int, StackSummary] = {}


class StackSummary:
    """A thread's stack from one frame out, while it cannot change: the code objects on it,
    read once (:meth:`codes`), so that every later quiescence check looks at that summary
    instead of walking the frames again (a set test per thread).

    Made for a thread parked at a static update point (from the frame that called the point,
    a new one each park: while parked its frames do not change, nor does any frame's code),
    and by ``pymoult._stacks`` for a thread whose top frame is the one it had at the previous
    check (see :func:`pymoult._stacks.thread_stacks`).
    """

    __slots__ = ("frame", "_codes")

    def __init__(self, frame: FrameType) -> None:
        self.frame = frame
        self._codes: tuple[frozenset[str], tuple[CodeType, ...]] | None = None

    def codes(self) -> tuple[frozenset[str], tuple[CodeType, ...]]:
        """``(names, codes)``: the ``co_name`` of every frame's code (a frozenset) and the code
        objects themselves, innermost first (a tuple)."""
        summary = self._codes
        if summary is None:
            codes: list[CodeType] = []
            frame: FrameType | None = self.frame
            while frame is not None:
                codes.append(frame.f_code)
                frame = frame.f_back
            summary = self._codes = (frozenset(code.co_name for code in codes), tuple(codes))
        return summary


def point_callers() -> dict[int, StackSummary]:
    """``{ident: StackSummary}`` of the threads parked at a static point now."""
    return _point_callers.copy()  # one C call: a consistent copy under the GIL


_wanting: set[ThreadControl] = set()  # controls that currently want their thread to stop at a point

#: While a manager thread is being woken for new work: a raw lock, held until it runs. Points
#: wait on it (bounded), so that busy application threads let the manager have the GIL.
_handoff: Handoff | None = None


class RebootException(BaseException):
    """Raised inside a ``DSU_Thread`` to stop the current run of its main and start it again.

    Raise it yourself, or have it raised at the thread's next update point by
    ``pymoult.lowlevel.stack.resetThread``. It derives from ``BaseException`` (like
    ``SystemExit``) so that the application's ``except Exception:`` does not swallow a reboot.
    ``target`` is None for a reboot of the thread's main, or the reboot boundary to restart;
    ``replacement`` is what that boundary calls instead.
    """

    def __init__(self, *args: object, target: Callable[..., Any] | None = None,
                 replacement: Callable[[], Any] | None = None) -> None:
        super().__init__(*args)
        self.target = target
        self.replacement = replacement
        #: The future the reboot answers, set when it is raised at an update point.
        self.future: Future[Any] | None = None


#: What a reboot request carries: None to restart the thread's main, or a function that the
#: thread calls with itself at its update point and that returns the ``RebootException`` to raise.
RebootPayload = Callable[..., RebootException]
#: A reboot request: (payload, the future it answers, whether it is also raised asynchronously).
RebootRequest = tuple[RebootPayload | None, Future[Any], bool]
#: Serves a reboot request in the thread itself (``DSU_Thread``'s): raises the reboot, or fails
#: its future and returns.
RebootHandler = Callable[[RebootPayload | None, Future[Any], bool], None]


# How long a waiter sleeps between liveness checks of a *plain* thread, which gives no signal
# when it ends. DSU_Threads notify their waiters when they end, so waits on them never slice.
_PLAIN_THREAD_LIVENESS_SLICE = 0.05
#: Seconds a thread suspended anywhere is given to park at a static update point before the trap
#: parks it wherever it is: threads with points in their loops park at a point, as they would
#: without the trap; threads without points are suspended this much later.
POINT_GRACE = 0.02
# How often a wait for a thread suspended anywhere looks whether it has become dormant (blocked
# in C or in a wait of threading: suspended without parking; see pymoult._suspension).
_DORMANT_SLICE = 0.002


def staticUpdatePoint(name: str | None = None) -> None:
    """Mark a point where the calling thread is in a safe state for an update.

    Place it in hot loops: when no update is pending it is one global test and a return. When a
    manager has asked this thread to suspend, reboot or run an active update, the request is
    served here: the thread parks until resumed, raises ``RebootException``, or runs the active
    update function. ``name`` labels the point in ``repr`` and logs. Any thread may call it,
    including the main thread and plain ``threading.Thread`` objects.

    While an idle ``ThreadedManager`` is being woken for a new update, a point also waits for
    it to run, at most ``ThreadedManager.wake_handoff`` (2 ms; typically 0.1-0.2 ms), so that
    busy threads do not keep the GIL from it.
    """
    if _pending:
        _serve_point(name)


def update_point() -> None:
    """``staticUpdatePoint()`` without a name: the same point, for the hottest loops.

    On CPython 3.13 a call that fills in a default argument is no longer specialised, so
    ``staticUpdatePoint()`` costs about 1.8x an empty call there, while this zero-argument
    spelling stays at about 1.2-1.3x (see ``benchmarks/bench_core.py``). On 3.10-3.12 both cost
    the same.
    """
    if _pending:
        _serve_point(None)


def _serve_point(name: str | None) -> None:
    handoff = _handoff
    if handoff is not None:
        _wait_for_handoff(handoff)
    control = _controls.get(_get_ident())
    if control is None or not control.wants_point:
        return
    if control.thread is not threading.current_thread():
        # a plain thread that ended with a request left its control under an ident that CPython
        # has reused for this thread: that request was never for us
        control.detach()
        return
    control.at_point(name, sys._getframe(2))  # the caller of staticUpdatePoint/update_point


def _set_wanting(control: ThreadControl, wants: bool) -> None:
    """Record whether ``control`` wants its thread to stop at a point; keep ``_pending`` exact."""
    global _pending
    with _registry_lock:
        if wants:
            _wanting.add(control)
        else:
            _wanting.discard(control)
        _pending = bool(_wanting) or _handoff is not None


class Handoff:
    """A wake-up of a manager thread that busy application threads make way for.

    Waking a thread is quick, but it then needs the GIL, and with busy threads it waits for
    switch intervals, losing the GIL race about half the time: that wait was most of an
    update's latency. While a hand-off is open, every update point waits (at most ``wait``
    seconds, without the GIL) until :meth:`close`, which the woken thread calls once it runs.
    A point that waits is a safe place to wait by definition; no point waits longer than
    ``wait``, whatever happens to the woken thread.

    The lock is a raw ``_thread`` lock held from :func:`open_handoff` to :meth:`close`: a point
    acquires it with a timeout and releases it at once, so it needs no Condition (whose
    ``__enter__`` an asynchronous reboot could interrupt with the lock held).
    """

    __slots__ = ("lock", "wait")

    def __init__(self, wait: float) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.wait = wait

    def close(self) -> None:
        """End the hand-off: points stop waiting (call once, from the woken thread)."""
        global _handoff, _pending
        with _registry_lock:
            if _handoff is self:
                _handoff = None
            _pending = bool(_wanting) or _handoff is not None
        self.lock.release()


def open_handoff(wait: float) -> Handoff:
    """Open a :class:`Handoff` (update points wait up to ``wait`` s until it is closed)."""
    global _handoff, _pending
    handoff = Handoff(wait)
    with _registry_lock:
        _handoff = handoff
        _pending = True
    return handoff


def _wait_for_handoff(handoff: Handoff) -> None:
    if handoff.lock.acquire(timeout=handoff.wait):
        handoff.lock.release()


def prune_dead_threads() -> None:
    """Forget the requests of plain threads that ended without reaching a point (they give no
    signal when they end). Call with no control's lock held."""
    with _registry_lock:
        dead = [c for c in _controls.values() if not c.is_dsu and not c.thread.is_alive()]
    for stale in dead:
        stale.detach()


@overload
def check_timeout(timeout: float, what: str = "timeout") -> float: ...
@overload
def check_timeout(timeout: float | None, what: str = "timeout") -> float | None: ...


def check_timeout(timeout: float | None, what: str = "timeout") -> float | None:
    """``timeout`` as a float >= 0, or None; ``PymoultValueError``/``PymoultTypeError``
    otherwise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise PymoultTypeError(f"{what} must be a number of seconds or None, got {timeout!r}")
    if not timeout >= 0:  # also refuses NaN
        raise PymoultValueError(f"{what} must be >= 0 or None, got {timeout!r}")
    return float(timeout)


@overload
def control_for(thread: threading.Thread, create: Literal[True] = True) -> ThreadControl: ...
@overload
def control_for(thread: threading.Thread, create: bool) -> ThreadControl | None: ...


def control_for(thread: threading.Thread, create: bool = True) -> ThreadControl | None:
    """The :class:`ThreadControl` of ``thread`` (created if needed and ``create`` is true)."""
    own = getattr(thread, "_pymoult_control", None)
    if own is not None:
        return own
    if not isinstance(thread, threading.Thread):
        raise PymoultTypeError(f"expected a threading.Thread, got {thread!r}")
    ident = thread.ident
    with _registry_lock:
        control = _controls.get(ident) if ident is not None else None
        if control is not None and control.thread is thread:
            return control
    if control is not None:  # left by an ended thread whose ident was reused
        control.detach()
    if not create:
        return None
    if ident is None or not thread.is_alive():
        raise ThreadStateError(f"{thread!r} is not running")
    with _registry_lock:
        control = _controls.get(ident)
        if control is None or control.thread is not thread:
            control = ThreadControl(thread)
            control.ident = ident
            _controls[ident] = control
        return control


def current_control(create: bool = True) -> ThreadControl | None:
    """The control of the calling thread."""
    control = _controls.get(_get_ident())
    if control is not None and control.thread is threading.current_thread():
        return control
    return control_for(threading.current_thread(), create=create) if create else None


class ThreadControl:
    """The DSU state of one thread: its outstanding requests and whether it is parked.

    All fields are guarded by ``cond``. Requesters call :meth:`request_suspend`,
    :meth:`request_reboot`, :meth:`request_active_update`; the thread serves them in
    :meth:`at_point`.
    """

    def __init__(self, thread: threading.Thread,
                 reboot_handler: RebootHandler | None = None) -> None:
        self.thread = thread
        self.ident: int | None = None
        # Critical sections take the raw lock (`with self._lock`): its __enter__ is C, so an
        # asynchronous exception cannot land between acquiring it and the `with` protecting it,
        # as it can in Condition.__enter__ (Python). Waits use the condition built on it.
        self._lock = threading.Lock()
        self.cond = threading.Condition(self._lock)
        self.in_point = False  # the thread is serving requests in at_point
        # while in at_point: the frame that called the point
        self.point_caller: FrameType | None = None
        self.is_dsu = reboot_handler is not None
        self.reboot_handler = reboot_handler  # called in the thread to raise its reboot
        self.active = False
        self.suspend_requested = False
        self.parked = False
        self.parked_at: str | None = None
        self.releases = 0  # incremented by every resume(): a parked thread waits for a change
        self.reboot_request: RebootRequest | None = None  # not yet served
        self.reboot_serving: RebootRequest | None = None  # taken at a point, raising
        self.active_function: Callable[[], Any] | None = None
        self.active_future: Future[Any] | None = None
        self.finished = False
        self.wants_point = False
        self.anywhere = False  # the suspension may be served by the trap, wherever the thread is
        # the trap's trace function, while it is set on the thread
        self.trap: TraceFunction | None = None
        self.dormant = False  # counted as suspended without parking (see pymoult._suspension)
        self.anywhere_from = 0.0  # the trap is set from then on (after the grace for a point)

    # -- registration (DSU_Threads register themselves when they start) ----------------------

    def attach(self) -> None:
        """Called by the thread itself when it starts running."""
        self.ident = ident = _get_ident()
        with _registry_lock:
            _controls[ident] = self
        self._refresh()

    def detach(self) -> None:
        """Called by the thread itself when it ends: fail what can no longer be served."""
        with self._lock:
            self.finished = True
            self.suspend_requested = False
            self.releases += 1  # nothing may stay parked on a control that is gone
            reboot, self.reboot_request = self.reboot_request, None
            serving, self.reboot_serving = self.reboot_serving, None
            future, self.active_future = self.active_future, None
            self.active_function = None
            self._refresh_locked()
            self.cond.notify_all()
        with _registry_lock:
            if self.ident is not None and _controls.get(self.ident) is self:
                del _controls[self.ident]
        ended = ThreadStateError(f"{self.thread!r} ended before reaching an update point")
        for pending in (reboot[1] if reboot else None, serving[1] if serving else None, future):
            if pending is not None and not pending.done():
                pending.set_exception(ended)

    # -- requests -----------------------------------------------------------------------------

    def _refresh(self) -> None:
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        wants = (not self.finished) and bool(
            self.suspend_requested
            or self.reboot_request is not None
            or (self.active and self.active_function is not None)
        )
        if wants != self.wants_point:
            self.wants_point = wants
            _set_wanting(self, wants)

    def check_alive(self, what: str) -> None:
        """``ThreadStateError`` saying it cannot ``what`` the thread unless it runs."""
        if self.finished or self.ident is None or not self.thread.is_alive():
            raise ThreadStateError(f"cannot {what} {self.thread!r}: it is not running")

    def request_suspend(self, anywhere: bool = False, grace: float | None = None) -> None:
        """Ask the thread to park at its next update point; with ``anywhere``, also wherever it
        is (the trap of ``pymoult._suspension``: no update point needed) if it has not parked at
        a point within ``grace`` seconds (default ``POINT_GRACE``). The trap is set by the
        first wait or look (:meth:`suspended`) after the grace."""
        prune_dead_threads()
        grace = POINT_GRACE if grace is None else check_timeout(grace, "grace")
        with self._lock:
            self.check_alive("suspend")
            self.suspend_requested = True
            self._refresh_locked()
            if not anywhere or self.parked or self.anywhere:
                return
            self.anywhere = True
            self.anywhere_from = time.monotonic() + grace
        if not grace:
            self._set_trap()

    def _set_trap(self) -> None:
        """Set the trap if it is wanted, its grace is over and it is not set yet (the thread
        may have no Python frame right now: the waits try again)."""
        if self.trap is not None or not self.trap_wanted():
            return
        if time.monotonic() < self.anywhere_from:
            return
        trap = _suspension.make_trap(self)
        if _suspension.install(self.thread, trap):
            with self._lock:
                self.trap = trap
                wanted = self.trap_wanted()
            if not wanted:  # released meanwhile
                self._remove_trap()

    def _remove_trap(self) -> None:
        with self._lock:
            trap, self.trap = self.trap, None
        if trap is not None and _suspension.get_trap(self.thread) is trap:
            _suspension.remove(self.thread)

    def trap_wanted(self) -> bool:
        """True while a suspension anywhere is asked (read by the trap, without the lock)."""
        return self.anywhere and self.suspend_requested and not self.finished

    def park_in_trap(self, where: str) -> None:
        """Called by the trap, in the thread, at a safe place: park until resumed."""
        with self._lock:
            if self.trap_wanted() and not self.parked:
                self._park_locked(where)

    def _park_locked(self, where: str | None) -> None:
        """Park the calling thread (its own control, lock held) until the next resume()."""
        self.parked = True
        self.dormant = False
        self.parked_at = where
        ident = _get_ident()  # the calling thread is this control's
        if self.in_point and self.point_caller is not None:
            _point_callers[ident] = StackSummary(self.point_caller)
        parked_in = self.releases
        self.cond.notify_all()
        try:
            while self.releases == parked_in:
                self.cond.wait()
        finally:  # also when an asynchronous reboot lands while parked
            _point_callers.pop(ident, None)
            if self.releases == parked_in:
                self.parked = False
                self.parked_at = None
                self.cond.notify_all()

    def suspended(self) -> bool:
        """True if the thread is parked, or (suspended anywhere) dormant: blocked where it will
        park before it runs more application code. Called by another thread."""
        if self.parked or self.dormant:
            return True
        if not self.trap_wanted():
            return False
        self._set_trap()
        if self.trap is None or not _suspension.arm_dormant(self.thread):
            return self.parked
        with self._lock:
            if self.trap_wanted() and not self.parked:
                self.dormant = True
            return self.parked or self.dormant

    def resume(self) -> bool:
        """Release the thread (parked or only asked to park). False if there was nothing to do."""
        with self._lock:
            if not (self.suspend_requested or self.parked):
                return False
            self.suspend_requested = False
            # released at once, even before the thread wakes: is_suspended() is False from now
            self.parked = False
            self.parked_at = None
            if self.ident is not None:
                _point_callers.pop(self.ident, None)
            self.anywhere = False
            self.dormant = False
            self.releases += 1
            self._refresh_locked()
            self.cond.notify_all()
        self._remove_trap()
        return True

    def request_reboot(self, payload: RebootPayload | None, asynchronous: bool = False,
                       raise_async: Callable[[], None] | None = None) -> Future[Any]:
        """Post a reboot; with ``asynchronous``, ``raise_async()`` raises it in the thread now.

        Both happen under the control's lock, so the thread cannot serve the request at a point
        in between: whichever comes first (the point or the asynchronous exception) is the one
        reboot, and the other is withdrawn.
        """
        if self.reboot_handler is None:
            raise PymoultTypeError(f"a DSU_Thread is required to reboot, got {self.thread!r}")
        if asynchronous and raise_async is None:
            raise PymoultTypeError("an asynchronous reboot needs raise_async")
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self.check_alive("reboot")
            previous = self.reboot_request
            self.reboot_request = (payload, future, asynchronous)
            self._refresh_locked()
            if raise_async is not None and asynchronous and not (self.in_point or self.parked):
                # at a point the request is served there; an asynchronous exception could land
                # inside Condition.wait's Python code and leave the lock in a wrong state
                raise_async()
            elif asynchronous:
                self.reboot_request = (payload, future, False)
            self.cond.notify_all()
        if previous is not None:
            previous[1].set_exception(ThreadStateError("superseded by a later reboot request"))
        return future

    def withdraw_reboot(self, future: Future[Any]) -> bool:
        """Withdraw the reboot request that ``future`` answers if the thread has not served it
        yet (an update that posted it was rolled back); True when withdrawn. Its future then
        fails with ``ThreadStateError``."""
        with self._lock:
            request = self.reboot_request
            if request is None or request[1] is not future:
                return False
            self.reboot_request = None
            self._refresh_locked()
            self.cond.notify_all()
        future.set_exception(ThreadStateError("the reboot was withdrawn (its update was rolled "
                                              "back)"))
        return True

    def reboot_served(self) -> Future[Any] | None:
        """Called when a reboot exception reaches the run loop: the future it answers, if any.

        Consumes the request being served at a point, or else a request still pending (an
        asynchronous reboot that arrived before any point): either way, no second reboot follows.
        """
        with self._lock:
            request = self.reboot_serving or self.reboot_request
            self.reboot_serving = None
            self.reboot_request = None
            self._refresh_locked()
        return None if request is None else request[1]

    def request_active_update(self, function: Callable[[], Any] | None) -> Future[Any]:
        if function is not None and not callable(function):
            raise PymoultTypeError(f"active update function must be callable, got {function!r}")
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self.finished:
                raise ThreadStateError(f"cannot give an active update to {self.thread!r}: "
                                       "it has ended")
            previous = self.active_future
            self.active_function = function
            self.active_future = future if function is not None else None
            self._refresh_locked()
            self.cond.notify_all()
        if previous is not None and not previous.done():
            previous.set_exception(ThreadStateError("superseded by a later active update function"))
        if function is None:
            future.set_result(None)
        return future

    def set_active(self, active: bool) -> None:
        with self._lock:
            self.active = bool(active)
            self._refresh_locked()

    # -- waiting for the thread ----------------------------------------------------------------

    def wait_parked(self, timeout: float | None = None) -> bool:
        """Block until the thread is parked at a point; False on timeout, or if the thread has
        ended or not started."""
        if self.ident == _get_ident():
            raise DeadlockDetectedError(
                f"{self.thread!r} cannot wait for itself to park at an update point"
            )
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.trap_wanted() and self.suspended():  # looks at the stack: not under the lock
                return True
            with self._lock:
                if self.parked:
                    return True
                if self.finished:
                    return False
                if not self.thread.is_alive():  # not started, or a plain thread that ended
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                slice_ = None
                if self.anywhere:
                    slice_ = _DORMANT_SLICE
                elif not self.is_dsu:
                    slice_ = _PLAIN_THREAD_LIVENESS_SLICE
                if slice_ is not None:
                    remaining = slice_ if remaining is None else min(remaining, slice_)
                self.cond.wait(remaining)
        if not self.is_dsu and self.thread.ident is not None:
            self.detach()  # a plain thread ended without telling: drop what it left behind
        return False

    # -- served in the thread itself -----------------------------------------------------------

    def at_point(self, name: str | None, caller: FrameType | None = None) -> None:
        """Serve every outstanding request, in the thread, at the point called ``name`` (called
        by the frame ``caller``)."""
        try:
            with self._lock:
                self.in_point = True
                self.point_caller = caller
            self._serve_requests(name)
        finally:
            with self._lock:
                self.in_point = False
                self.point_caller = None

    def _serve_requests(self, name: str | None) -> None:
        while True:
            reboot: RebootRequest | None = None
            active: tuple[Callable[[], Any], Future[Any] | None] | None = None
            with self._lock:
                if self.reboot_request is not None:
                    reboot = self.reboot_serving = self.reboot_request
                    self.reboot_request = None
                    self._refresh_locked()
                elif self.active and (function := self.active_function) is not None:
                    active = (function, self._take_active_locked()[1])
                elif self.suspend_requested:
                    self._park_locked(name)
                    continue  # serve what was asked while parked (reboot, active update)
                else:
                    return
            if reboot is not None:
                assert self.reboot_handler is not None  # request_reboot refuses a plain thread
                # raises the reboot, or fails its future and returns (the thread goes on)
                self.reboot_handler(*reboot)
                with self._lock:
                    self.reboot_serving = None
            elif active is not None:
                self.run_active(*active)

    def _take_active_locked(self) -> tuple[Callable[[], Any] | None, Future[Any] | None]:
        function, future = self.active_function, self.active_future
        self.active_function = None
        self.active_future = None
        self._refresh_locked()
        return function, future

    def take_active(self) -> tuple[Callable[[], Any] | None, Future[Any] | None]:
        with self._lock:
            return self._take_active_locked()

    def run_active(self, function: Callable[[], Any], future: Future[Any] | None) -> None:
        """Run an active update function in this thread; its outcome goes to ``future``."""
        try:
            result = function()
        except BaseException as exc:  # the thread keeps running whatever the update did
            if isinstance(exc, (SystemExit, KeyboardInterrupt, RebootException)):
                if future is not None:
                    future.set_exception(exc)
                raise
            logger.exception("active update function %r failed in %r", function, self.thread)
            if future is not None:
                error = ActiveUpdateError(f"active update function {function!r} raised {exc!r}")
                error.__cause__ = exc
                future.set_exception(error)
            return
        if future is not None:
            future.set_result(result)

    def describe(self) -> str:
        """A short text of the thread's DSU state, for ``repr``."""
        if self.finished:
            return "finished"
        if self.parked:
            return "parked" + (f" at {self.parked_at!r}" if self.parked_at is not None else "")
        if self.dormant:
            return "suspended (blocked, parks on waking)"
        parts = []
        if self.suspend_requested:
            parts.append("suspend requested")
        if self.reboot_request is not None:
            parts.append("reboot requested")
        if self.active_function is not None:
            parts.append("active update pending")
        return ", ".join(parts) if parts else "running"


