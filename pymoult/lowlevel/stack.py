"""Rebooting threads and functions without dropping frames.

Pymoult on PyPy could drop frames from a running stack. Stock CPython cannot, so a reboot here is
an exception that unwinds the stack to a place that knows how to start again:

- the thread's run loop, for :func:`resetThread` and for :func:`rebootFunction` of the thread's
  main (the function of ``target`` or the ``main`` method, or the one set by :func:`switchMain`);
- a *reboot boundary*, a function the application marked with :func:`reboot_boundary`, for
  :func:`rebootFunction` of that function.

The exception is :class:`~pymoult.threads.RebootException`, raised at the thread's next update
point, so it unwinds from a safe state and ``finally`` blocks run. Any other target is refused
with ``RebootError`` when the reboot is requested, never silently ignored.

Asynchronous reboot (``resetThread(thread, asynchronous=True)``) is for a thread that never
reaches an update point. It uses CPython's async-exception API and is opt-in because the
exception lands at an arbitrary bytecode boundary: inside a ``finally`` block, between two
writes that should go together, or in a library's clean-up. It is delivered only once a
blocking call (sleep, I/O, lock wait) returns, and code that catches ``BaseException`` can
swallow it. Pymoult keeps it out of its own locking: the request and the exception are posted
together under the thread's lock, a thread serving requests at an update point gets the reboot
there instead (no exception is sent), and a reboot served at a point withdraws the asynchronous
copy, so one request reboots the thread once. The run loop of a DSU_Thread treats an asynchronous
reboot landing anywhere before main returns as a reboot.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from types import CodeType, FrameType
from typing import Any, TypeVar, cast

from .. import _cpython
from .._parking import RebootException, control_for
from ..errors import PymoultTypeError, RebootError, ThreadStateError
from ..threads import DSU_Thread, MainCall
from .._stacks import codes_of
from .journal import Journal, Operation, current_journal, describe

__all__ = ["resetThread", "switchMain", "rebootFunction", "reboot_boundary"]

F = TypeVar("F", bound=Callable[..., Any])


def _require_dsu_thread(thread: object) -> DSU_Thread:
    if not isinstance(thread, DSU_Thread):
        raise PymoultTypeError(f"a DSU_Thread is required, got {thread!r}")
    return thread


def _require_running(thread: DSU_Thread, what: str) -> None:
    if thread.ident is None:
        raise ThreadStateError(f"cannot {what} {thread!r}: it has not started "
                               "(use switchMain to choose what it will run)")
    if not thread.is_alive():
        raise ThreadStateError(f"cannot {what} {thread!r}: it has finished")


class RequestReboot(Operation):
    """A reboot of ``thread`` was requested; undo withdraws it if the thread has not served it
    (an asynchronous reboot already delivered cannot be taken back: undo then raises)."""

    def __init__(self, thread: DSU_Thread, future: Future[Any]) -> None:
        self.thread, self.future = thread, future
        self.text = f"request a reboot of {thread.name!r}"

    def undo(self) -> None:
        if not self.future.done() and not control_for(self.thread).withdraw_reboot(self.future):
            raise ThreadStateError(f"the reboot of {self.thread.name!r} was already delivered")


class SwitchMain(Operation):
    """What ``thread``'s next main runs was changed; undo puts the previous one back."""

    def __init__(self, thread: DSU_Thread, previous: MainCall | None,
                 func: Callable[..., object]) -> None:
        self.thread, self.previous = thread, previous
        self.text = f"switch the main of {thread.name!r} to {describe(func)}"

    def undo(self) -> None:
        self.thread.restore_main(self.previous)


def resetThread(thread: DSU_Thread, asynchronous: bool = False,
                journal: Journal | None = None) -> Future[Any]:
    """Reboot ``thread``: at its next update point its main stops and starts again.

    Returns a ``concurrent.futures.Future`` resolved with the thread's reboot count once main
    has restarted (failed with ``ThreadStateError`` if the thread ends first). A thread parked at
    a point reboots when resumed. With ``asynchronous=True`` the reboot is also raised in the
    thread at once through CPython's async-exception API: see the module notes for the risks.
    Recorded in the journal (the current one by default): a rollback withdraws the request if
    the thread has not served it yet.
    """
    _require_dsu_thread(thread)
    _require_running(thread, "reboot")
    future = control_for(thread).request_reboot(
        None, asynchronous, lambda: _cpython.raise_in_thread(thread, RebootException))
    journal = current_journal(journal)
    if journal is not None:
        journal.record(RequestReboot(thread, future))
    return future


def switchMain(thread: DSU_Thread, func: Callable[..., object], args: Iterable[Any] = (),
               kwargs: Mapping[str, Any] | None = None, journal: Journal | None = None) -> None:
    """Make the next (re)start of ``thread``'s main run ``func(*args, **kwargs)``.

    Takes effect at the next reboot (or at start for a thread not yet started); combine with
    :func:`resetThread`. Recorded in the journal (the current one by default).
    """
    previous = _require_dsu_thread(thread).switch_main(func, args, kwargs)
    journal = current_journal(journal)
    if journal is not None:
        journal.record(SwitchMain(thread, previous, func))


def reboot_boundary(function: F) -> F:
    """Mark ``function`` as a place where :func:`rebootFunction` may restart it.

    The returned wrapper calls ``function``; when a reboot of it is requested, it is unwound at
    the thread's next update point inside it, and the wrapper calls the replacement instead
    (``new_function(state)``), returning its result to the original caller.
    """
    if not callable(function):
        raise PymoultTypeError(f"reboot_boundary needs a callable, got {function!r}")

    @functools.wraps(function)
    def boundary(*args: Any, **kwargs: Any) -> Any:
        call: Callable[[], Any] = functools.partial(function, *args, **kwargs)
        while True:
            try:
                return call()
            except RebootException as reboot:
                if reboot.target is not boundary:
                    raise
                if reboot.replacement is not None:  # else: start the same call again
                    call = reboot.replacement
                future = getattr(reboot, "future", None)
                if future is not None and not future.done():
                    future.set_result(None)

    boundary.__pymoult_boundary__ = True  # type: ignore[attr-defined]  # marks the wrapper
    return cast(F, boundary)


def _main_codes(thread: DSU_Thread) -> set[CodeType]:
    main = thread.current_main
    if main is None:
        return set()
    target = getattr(thread, "_target", None)  # deleted once the thread has finished
    if getattr(main, "__func__", None) is DSU_Thread.main:
        return codes_of(target) if target is not None else set()
    return codes_of(main)


def _innermost_frame(codes: Iterable[CodeType], function: object,
                     thread: DSU_Thread) -> FrameType:
    """The innermost frame of ``codes`` on the calling thread's stack (the rebooting thread)."""
    code_ids = {id(code) for code in codes}
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if id(frame.f_code) in code_ids:
            return frame
        frame = frame.f_back
    raise RebootError(f"cannot reboot {describe(function)} in {thread.name!r}: it was no longer "
                      "running when the thread reached its update point")


def rebootFunction(thread: DSU_Thread, function: Callable[..., Any],
                   new_function: Callable[[Any], Any],
                   capture_state: Callable[[FrameType], Any] | None = None) -> Future[Any]:
    """Stop the running ``function`` in ``thread`` and continue with ``new_function(state)``.

    ``state = capture_state(frame)`` is taken from ``function``'s innermost frame when the thread
    reaches its next update point (default: a copy of the frame's locals). ``function`` must be
    the thread's main (then ``new_function(state)`` becomes the new main) or a function marked
    with :func:`reboot_boundary` that is running in the thread now; anything else raises
    ``RebootError`` at once. Returns a future resolved when the replacement starts, or failed
    with the error of ``capture_state``.
    """
    _require_dsu_thread(thread)
    _require_running(thread, "reboot a function of")
    for name, value in (("new_function", new_function), ("capture_state", capture_state)):
        if value is not None and not callable(value):
            raise PymoultTypeError(f"{name} must be callable, got {value!r}")
    if new_function is None:
        raise PymoultTypeError("new_function must be callable, got None")
    capture = capture_state or (lambda frame: dict(frame.f_locals))

    if getattr(function, "__pymoult_boundary__", False):
        wrapped = getattr(function, "__wrapped__")  # the function the boundary wraps
        codes = codes_of(wrapped)
        from .alterability import isFunctionInStack

        if not isFunctionInStack(wrapped, thread):
            raise RebootError(f"cannot reboot {function.__qualname__} in {thread.name!r}: "
                              "it is not running there")

        def payload(rebooting: DSU_Thread) -> RebootException:
            state = capture(_innermost_frame(codes, function, rebooting))
            return RebootException(target=function,
                                   replacement=functools.partial(new_function, state))
    else:
        codes = codes_of(function) if callable(function) else set()
        if not codes or not codes & _main_codes(thread):
            raise RebootError(
                f"cannot reboot {function!r} in {thread.name!r}: it is neither the thread's main "
                "nor a function marked with reboot_boundary")

        def payload(rebooting: DSU_Thread) -> RebootException:
            state = capture(_innermost_frame(codes, function, rebooting))
            rebooting.switch_main(new_function, (state,))
            return RebootException(f"{function.__qualname__} rebooted into "
                                   f"{new_function.__qualname__}")

    return control_for(thread).request_reboot(payload)
