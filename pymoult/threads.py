"""DSU threads: rebootable, suspendable threads with a sleeping continuation.

The threading model
-------------------
A :class:`DSU_Thread` is a ``threading.Thread`` whose code is its :meth:`~DSU_Thread.main`
(subclass and define ``main``, or pass ``target``). A thread serves requests at its update
points (``pymoult.lowlevel.alterability.staticUpdatePoint``): a manager posts a request
(:meth:`~DSU_Thread.suspend`, a reboot, an active update) and the thread serves it at its next
point: it parks until :meth:`~DSU_Thread.resume`, raises :class:`RebootException`, or runs its
active update function. A suspension may also land where the thread is, without a point (the
trap of ``pymoult._suspension``, as ``suspend_thread(..., anywhere=True)`` and the updates'
default ``suspension = "anywhere"`` ask); reboots and active updates wait for a point. Requests
and acknowledgements travel through one condition variable per thread, so nobody polls for a
DSU_Thread, and an idle point costs one global test.

A thread that never reaches a point can still be rebooted asynchronously
(``resetThread(thread, asynchronous=True)``, CPython's async-exception API, opt-in with its risks)
or traced (:func:`set_thread_trace`, which takes effect at the thread's next Python event).

Each DSU_Thread also owns a *sleeping continuation*: a greenlet created when the thread starts,
which :meth:`~DSU_Thread.switch` wakes to run ``sleeping_continuation_function`` before control
returns to the caller. A greenlet belongs to the thread that created it, so ``switch()`` is only
valid from the thread itself.

Plain ``threading.Thread`` objects and the main thread may call ``staticUpdatePoint`` too, and can
be suspended and resumed through the module functions (``suspend_thread`` etc. in
``pymoult.lowlevel.alterability``); reboots and continuations need a DSU_Thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from types import FrameType
from typing import Any

import greenlet

from . import _cpython, _thread_trace
from ._parking import (RebootException, RebootPayload, ThreadControl, add_hidden_frames,
                       add_thread_base, control_for, current_control, remove_hidden_frames,
                       remove_thread_base)
from ._suspension import TraceFunction
from .errors import ContinuationError, PymoultTypeError, RebootError, ThreadStateError

__all__ = [
    "DSU_Thread",
    "RebootException",
    "start_active_update",
    "set_active_update_function",
    "get_thread_by_name",
    "set_thread_trace",
    "get_thread_trace",
]

logger = logging.getLogger("pymoult")

#: What a run of main calls: (function, args, kwargs).
MainCall = tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]


class DSU_Thread(threading.Thread):
    """A thread that can be suspended at update points, rebooted into a new main, and switched
    to its sleeping continuation.

    ``active`` selects how updates happen at its points: passive threads (the default) park when
    a manager asks them to; active threads run their ``active_update_function`` themselves.

    Subclassing contract: call ``DSU_Thread.__init__`` first, and define ``main`` rather than
    ``run`` (``run`` implements reboots).
    """

    #: Called in the continuation by :meth:`switch`; set it on the instance or define it.
    sleeping_continuation_function: Callable[[], Any] | None = None
    # threading.Thread's own attributes, which run() deletes once the thread has finished
    _target: Callable[..., object] | None
    _args: tuple[Any, ...]
    _kwargs: Mapping[str, Any]

    def __init__(self, group: None = None, target: Callable[..., object] | None = None,
                 name: str | None = None, args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, active: bool = False, *,
                 daemon: bool | None = None) -> None:
        if target is not None and not callable(target):
            raise PymoultTypeError(f"DSU_Thread target must be callable, got {target!r}")
        super().__init__(group=group, target=target, name=name, args=args, kwargs=kwargs,
                         daemon=daemon)
        self._pymoult_control = ThreadControl(self, reboot_handler=self._reboot_at_point)
        self._pymoult_control.active = bool(active)
        self._next_main: MainCall | None = None  # set by switchMain, or None
        self._main_function: Callable[..., object] | None = None  # what main is running now
        self._boundaries: list[Callable[..., Any]] = []  # live reboot boundaries, innermost last
        self._continuation: greenlet.greenlet | None = None
        self._started_once = False
        #: How many times main has been rebooted.
        self.reboots = 0

    # -- the code the thread runs ----------------------------------------------------------

    def main(self) -> None:
        """What the thread runs: by default its ``target``. Override in subclasses."""
        if self._target is not None:
            self._target(*self._args, **self._kwargs)

    def start(self) -> None:
        """Start the thread. A second call raises ``ThreadStateError`` (a ``RuntimeError``)."""
        if self._started_once:
            raise ThreadStateError(f"{self!r} was already started; a thread starts only once")
        self._started_once = True
        super().start()

    @property
    def current_main(self) -> Callable[..., object] | None:
        """The function the current run of main is running (the thread's ``main`` method,
        or the function ``switchMain`` or a reboot put in its place); None between runs."""
        return self._main_function

    def run(self) -> None:
        control = self._pymoult_control
        self._continuation = greenlet.greenlet(self._continuation_loop)
        try:
            self._run_mains(control)
        except RebootException:
            # an asynchronous reboot that landed after main had returned: the thread was ending
            logger.warning("%r: a reboot arrived after main had returned; the thread ends", self)
        finally:
            self._main_function = None
            remove_thread_base(self.ident)
            self._end_continuation()
            control.detach()
            if _thread_trace.get_trace(self) is not None:
                _thread_trace.set_trace(self, None)
            del self._target, self._args, self._kwargs

    def _run_mains(self, control: ThreadControl) -> None:
        """Run main, and run it again after each reboot. Every statement is inside the ``try``
        so that an asynchronous reboot, wherever it lands before main returns, is a reboot.

        This frame and the ones below it are the thread's base (``_parking.add_thread_base``):
        quiescence checks read their code once instead of walking them at every check."""
        attached = False
        while True:
            try:
                if not attached:
                    add_thread_base(threading.get_ident(), sys._getframe())  # idempotent
                    attached = True
                    control.attach()
                function, args, kwargs = self._take_main()
                self._main_function = function
                function(*args, **kwargs)
                return
            except RebootException as reboot:
                served = control.reboot_served()
                future = getattr(reboot, "future", None) or served
                if reboot.target is not None:  # a boundary's reboot that left its boundary
                    error = RebootError(f"the reboot of {reboot.target!r} escaped its boundary "
                                        "to the thread's main")
                    if future is not None and not future.done():
                        future.set_exception(error)
                    raise error from reboot
                self.reboots += 1
                logger.info("%r rebooted (reboot %d)", self, self.reboots)
                if future is not None and not future.done():
                    future.set_result(self.reboots)

    def _take_main(self) -> MainCall:
        if self._next_main is not None:
            return self._next_main
        return self.main, (), {}

    def switch_main(self, function: Callable[..., object], args: Iterable[Any] = (),
                    kwargs: Mapping[str, Any] | None = None) -> MainCall | None:
        """Make the next (re)start of main run ``function(*args, **kwargs)``; returns what it
        was to run before (for :meth:`restore_main`)."""
        if not callable(function):
            raise PymoultTypeError(f"new main must be callable, got {function!r}")
        previous = self._next_main
        self._next_main = (function, tuple(args), dict(kwargs or {}))
        return previous

    def restore_main(self, previous: MainCall | None) -> None:
        """Undo a :meth:`switch_main` that returned ``previous``."""
        self._next_main = previous

    def _reboot_at_point(self, payload: RebootPayload | None, future: Future[Any],
                         asynchronous: bool) -> None:
        """Serve a reboot request at an update point, in this thread."""
        if asynchronous:  # served here first: the asynchronous copy must not reboot us again
            _cpython.clear_async_exc(threading.get_ident())  # this thread: self.ident
        if payload is None:
            error = RebootException(f"reboot of {self.name} requested")
        else:
            try:
                error = payload(self)  # builds the RebootException (captures state, ...)
            except Exception as exc:
                logger.exception("reboot of %r cancelled: preparing it failed", self)
                future.set_exception(exc)
                return
        error.future = future
        raise error

    # -- DSU state -------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True when this thread runs its active update function itself at update points."""
        return self._pymoult_control.active

    @active.setter
    def active(self, value: bool) -> None:
        self._pymoult_control.set_active(value)

    def set_active(self) -> None:
        """Make updates active: the thread runs its ``active_update_function`` at its points."""
        self.active = True

    def set_passive(self) -> None:
        """Make updates passive (default): the thread parks at its points when asked."""
        self.active = False

    @property
    def active_update_function(self) -> Callable[[], Any] | None:
        """The function the thread runs at its next active update, or None."""
        return self._pymoult_control.active_function

    @active_update_function.setter
    def active_update_function(self, function: Callable[[], Any] | None) -> None:
        self._pymoult_control.request_active_update(function)

    def suspend(self, anywhere: bool = True) -> None:
        """Ask the thread to suspend (returns at once): at its next update point, or, with
        ``anywhere`` (the default, as the original's VM-level suspension), wherever it is if it
        reaches no point within a short grace (see ``suspend_thread`` in
        ``pymoult.lowlevel.alterability``)."""
        self._pymoult_control.request_suspend(anywhere=anywhere)

    def resume(self) -> bool:
        """Release the thread if it is parked, or cancel a suspension not yet reached.

        Returns True if there was something to release, False if the thread was neither parked
        nor asked to park (resuming twice is harmless).
        """
        return self._pymoult_control.resume()

    def is_suspended(self) -> bool:
        """True while the thread is suspended: parked (at an update point or, suspended
        anywhere, at its next event) or blocked where it will park before running on."""
        control = self._pymoult_control
        return control.parked or control.dormant

    def wait_suspended(self, timeout: float | None = None) -> bool:
        """Block until the thread is suspended; True once it is, False on timeout or if it ended.

        Raises ``DeadlockDetectedError`` if called by the thread itself.
        """
        return self._pymoult_control.wait_parked(timeout)

    # -- the sleeping continuation ---------------------------------------------------------

    def _continuation_loop(self) -> None:
        while True:
            function = self.sleeping_continuation_function
            outcome: tuple[str, Any] = ("ok", None)
            if function is not None:
                try:
                    outcome = ("ok", function())
                except greenlet.GreenletExit:
                    raise
                except (RebootException, SystemExit, KeyboardInterrupt) as exc:
                    outcome = ("raise", exc)  # control flow: carried on in the switcher
                except BaseException as exc:
                    outcome = ("error", exc)
            greenlet.getcurrent().parent.switch(outcome)

    def switch(self) -> Any:
        """Switch to the sleeping continuation: run ``sleeping_continuation_function`` (if set)
        there, then come back. Returns what the function returned.

        Only the thread itself may switch (a greenlet belongs to the thread that made it):
        another thread gets ``ThreadStateError``. If the function raises, the error is logged
        and ``ContinuationError`` is raised here with it as ``__cause__``; the continuation stays
        usable.
        """
        if threading.get_ident() != self.ident or self._continuation is None:
            raise ThreadStateError(
                f"switch() must be called by {self.name!r} itself while it runs, "
                f"not by {threading.current_thread().name!r}"
            )
        here = greenlet.getcurrent()
        if here is self._continuation:
            raise ThreadStateError(f"switch() called from inside {self.name!r}'s continuation")
        self._continuation.parent = here
        if not self._continuation:  # its first run: from now on it has frames of its own
            add_hidden_frames(self.ident, self.suspended_frames)
        kind, value = self._continuation.switch()
        if kind == "ok":
            return value
        if kind == "raise":  # a reboot or an exit asked inside the continuation
            raise value
        logger.error("sleeping continuation function of %r raised", self, exc_info=value)
        raise ContinuationError(
            f"sleeping continuation function of {self.name!r} raised {value!r}") from value

    def _end_continuation(self) -> None:
        continuation, self._continuation = self._continuation, None
        try:
            if continuation is not None and continuation:  # started and not finished
                continuation.throw(greenlet.GreenletExit)
        finally:
            remove_hidden_frames(self.ident)

    def suspended_frames(self) -> list[FrameType]:
        """Frames of this thread that ``sys._current_frames()`` does not show.

        While the continuation sleeps, the frame where it is suspended; while it runs (the thread
        switched to it), the frame of the greenlet it will return to. Quiescence checks walk
        these too.
        """
        continuation = self._continuation
        if continuation is None:
            return []
        if continuation.gr_frame is not None:
            return [continuation.gr_frame]
        if continuation and continuation.parent is not None and continuation.parent.gr_frame:
            return [continuation.parent.gr_frame]
        return []

    def __repr__(self) -> str:
        base = super().__repr__()[:-1]
        return (f"{base} {'active' if self.active else 'passive'} "
                f"dsu={self._pymoult_control.describe()} reboots={self.reboots}>")


def _require_thread(thread: threading.Thread) -> threading.Thread:
    if not isinstance(thread, threading.Thread):
        raise PymoultTypeError(f"expected a thread, got {thread!r}")
    return thread


def start_active_update() -> Future[Any] | None:
    """Run the calling thread's pending active update function now, whether it is active or not.

    Returns the future carrying the function's outcome (an error in the function is logged and
    stored there; the thread keeps running), or None if no active update was pending.
    """
    control = current_control(create=False)
    if control is None:
        return None
    function, future = control.take_active()
    if function is None:
        return None
    control.run_active(function, future)
    return future


def set_active_update_function(function: Callable[[], Any] | None,
                               thread: threading.Thread) -> Future[Any]:
    """Set the function ``thread`` runs at its next active update (None clears it).

    An active thread runs it at its next update point; any thread runs it when it calls
    :func:`start_active_update`. Returns a ``concurrent.futures.Future`` resolved with the
    function's result, or failed with ``ActiveUpdateError`` if it raised (or with
    ``ThreadStateError`` if the thread ended first or the function was replaced).
    """
    if function is not None and not callable(function):
        raise PymoultTypeError(f"active update function must be callable, got {function!r}")
    return control_for(_require_thread(thread)).request_active_update(function)


def get_thread_by_name(name: str) -> threading.Thread | None:
    """The live thread called ``name``, or None. If several share the name, the first started."""
    for thread in threading.enumerate():
        if thread.name == name:
            return thread
    return None


def set_thread_trace(thread: threading.Thread, trace: TraceFunction | None) -> None:
    """Give ``thread`` the trace function ``trace`` (``sys.settrace`` semantics), effective at
    its next Python event without the thread calling anything; None removes it.

    Frames already running in the thread are traced with ``trace`` as their local trace, so the
    next line the thread runs reaches it. Other threads keep running at full speed, and the
    traced thread gets its speed back when the trace is removed. An exception in the trace is
    logged and removes the trace. See ``pymoult._thread_trace`` for the mechanism per version.
    """
    _thread_trace.set_trace(_require_thread(thread), trace)


def get_thread_trace(thread: threading.Thread) -> TraceFunction | None:
    """The trace function set on ``thread`` by :func:`set_thread_trace`, or None."""
    return _thread_trace.get_trace(_require_thread(thread))
