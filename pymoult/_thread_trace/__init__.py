"""Give *another* thread a ``sys.settrace``-like trace function, without that thread's help.

Public interface::

    BACKEND: str                     # "monitoring" (CPython 3.12+) or "ctypes" (CPython 3.10/3.11)
    set_trace(thread, trace) -> None # trace: callable or None (None removes)
    get_trace(thread) -> callable | None

Semantics (both backends)
-------------------------
``trace(frame, event, arg)`` is called in the target thread, like a ``sys.settrace`` function:

* ``'call'`` (arg ``None``) for frames that start after installation; the return value becomes the
  frame's *local trace* (``None``: that frame is not traced locally).
* Frames that are already on the target's stack when the trace is installed get ``trace`` itself as
  their local trace, so the next ``'line'`` event of the frame the target is running reaches
  ``trace`` at once: a thread spinning in a loop that calls nothing, or blocked in
  ``Event.wait``/``time.sleep`` (once it resumes), is caught without calling anything (the original
  Pymoult "sets the trace for the given thread, then triggers it immediately").
* Local traces get ``'line'``, ``'return'`` (arg: the returned or yielded value, ``None`` when the
  frame is left by an exception) and ``'exception'`` (arg: ``(type, value, traceback)``). Their
  return value replaces the local trace; ``None`` stops local tracing of that frame. (This is what
  the ``sys.settrace`` documentation promises; CPython's own ``sys.settrace`` actually *keeps* the
  old local trace when one returns ``None``. This package follows the documentation.)
* A loop jumping back to the line it is on gives a ``'line'`` event per iteration, as with
  ``sys.settrace``.

Installing a trace on a thread that already has one replaces it (and re-arms every frame on its
stack with the new one). ``set_trace(thread, None)`` removes it; other threads are never slowed down
by a removed trace and the target goes back to full speed. Several threads can be traced at once,
with different traces. Both functions are thread-safe and may be called from any thread, including
from the trace function itself (a trace may remove itself with
``set_trace(current_thread(), None)``).

Errors in the trace function: an ``Exception`` raised by the trace (global or local) is logged on
the ``"pymoult"`` logger with its traceback, the trace is removed for that thread, and the target
thread carries on as if nothing had happened (CPython's ``sys.settrace`` instead propagates the
exception into the traced code: an update-point probe must never kill the application thread it
watches). A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``, a
control-flow exception such as a reboot request, raised by the trace or delivered asynchronously
while it runs) also removes the trace; then the backends differ, because a ctypes callback cannot
raise into its C caller:

* monitoring (3.12+): it propagates into the target thread from the point of the event, exactly as
  with ``sys.settrace``;
* ctypes (3.10/3.11): it cannot be passed on; it is logged (with its traceback) and dropped.
  (Re-raising it asynchronously with ``PyThreadState_SetAsyncExc`` does not work either: it lands in
  the trampoline's own bytecode, right after the call, before control returns to C.)

An event that is already being dispatched in the target thread when another thread removes or
replaces the trace may still reach the old trace (at most that one event).

A traced thread that ends is cleaned up: the trace is dropped when the outermost frame that was on
its stack at installation (``Thread._bootstrap`` for a ``threading.Thread``) returns, and every call
of ``set_trace``/``get_trace`` also prunes the records of threads that are no longer alive.

Each backend is a module of this package: ``monitoring`` (CPython 3.12, 3.13) and
``ctypes_settrace`` (CPython 3.10, 3.11), with what they share in ``common``; their docstrings give
the mechanism, its costs and its limits. ``BACKEND`` names the one this interpreter uses.

If the running interpreter lacks what its backend needs, ``set_trace`` raises
:class:`~pymoult.errors.UnsupportedError` naming what is missing (``get_trace`` returns ``None``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pymoult.errors import PymoultTypeError, UnsupportedError

from .common import TraceFunction, check_alive, check_thread, count_as_machinery, lock

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterable
    from types import FrameType

BACKEND: str
# The version tests come first so that mypy, checking for one version, sees the backend it uses
# (CPython 3.12+ always has sys.monitoring).
if sys.version_info >= (3, 12) and hasattr(sys, "monitoring"):
    BACKEND = "monitoring"
    from . import monitoring as backend
elif (
    sys.version_info >= (3, 10)
    and sys.version_info < (3, 12)
    and sys.implementation.name == "cpython"
):
    BACKEND = "ctypes"
    from . import ctypes_settrace as backend
else:  # pragma: no cover - not a supported interpreter
    BACKEND = "unsupported"
    from . import unsupported as backend  # type: ignore[no-redef]  # one backend per interpreter

__all__ = ["BACKEND", "TraceFunction", "set_trace", "get_trace", "trace_opcodes"]

count_as_machinery(globals())


def set_trace(thread: threading.Thread, trace: TraceFunction | None) -> None:
    """Give *thread* the trace function *trace* (``None`` removes it), effective at that thread's
    next Python event, without the thread calling anything.

    *trace* is called in *thread* as ``trace(frame, event, arg)`` with ``sys.settrace`` semantics
    (see the package docstring): ``'call'`` for frames started from now on (the result is the
    frame's local trace), while every frame already on the thread's stack gets *trace* as its local
    trace, so its next ``'line'`` event reaches *trace* at once. A trace already installed is
    replaced.

    An ``Exception`` raised by the trace is logged on ``logging.getLogger("pymoult")`` with its
    traceback and the trace is removed for that thread, which carries on unharmed.

    Raises :class:`~pymoult.errors.PymoultTypeError` if *thread* is not a ``threading.Thread`` or
    *trace* is neither callable nor ``None``; :class:`~pymoult.errors.ThreadStateError` if *thread*
    is not started, has finished, or has no Python frame to trace right now (installing only:
    removing the trace of a finished thread is a no-op);
    :class:`~pymoult.errors.UnsupportedError` if this interpreter lacks what the backend needs (or,
    on 3.12+, if no ``sys.monitoring`` tool id is free). Thread-safe; callable from any thread, the
    target itself and trace functions included.
    """
    check_thread(thread)
    if trace is not None and not callable(trace):
        raise PymoultTypeError(
            "trace must be callable or None, not %r (%s)" % (trace, type(trace).__name__)
        )
    if trace is None:
        if backend.UNSUPPORTED is not None:
            return
        with lock:
            ident = thread.ident
            if ident is not None:
                backend.uninstall(thread, ident)
            backend.prune()
        return
    if backend.UNSUPPORTED is not None:
        raise UnsupportedError("cannot trace another thread: %s" % (backend.UNSUPPORTED,))
    ident = check_alive(thread)
    with lock:
        backend.prune()
        backend.install(thread, ident, trace)


def get_trace(thread: threading.Thread) -> TraceFunction | None:
    """The trace function installed on *thread* by :func:`set_trace`, or ``None`` (none installed,
    removed after an error in it, or the thread has ended). Raises
    :class:`~pymoult.errors.PymoultTypeError` if *thread* is not a ``threading.Thread``."""
    check_thread(thread)
    ident = thread.ident
    if ident is None:
        return None
    with lock:
        backend.prune()
        return backend.current_trace(thread, ident)


def trace_opcodes(thread: threading.Thread, frames: Iterable[FrameType]) -> bool:
    """Also report an ``'opcode'`` event, to the frame's local trace, before every instruction
    that *frames* (frames of *thread*'s stack) run from now on, until the trace is removed: a
    thread blocked in a C call, or waiting for the GIL in the middle of a line, then meets its
    trace before it runs one more instruction of those frames, not only at its next line.

    Returns False (and does nothing) if *thread* has no trace installed by :func:`set_trace`.
    On the ctypes backend it sets ``frame.f_trace_opcodes``; on the monitoring backend it enables
    ``INSTRUCTION`` events on the frames' code objects, which costs every thread running that code
    a callback per instruction until the trace is removed: keep it short.
    """
    check_thread(thread)
    ident = thread.ident
    if backend.UNSUPPORTED is not None or ident is None:
        return False
    with lock:
        return backend.trace_opcodes(thread, ident, list(frames))
