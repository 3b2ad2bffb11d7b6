"""What the backends of ``pymoult._thread_trace`` share: one lock over their bookkeeping, the
checks of the public functions' arguments, a thread's stack without the package's own frames, the
quiet section around an installation, and the log line of a trace that raised.

The package's machinery runs in the traced thread (its callbacks, ``set_trace`` called by a trace)
and must never be reported to a trace nor counted as the thread's own code: a frame is the
package's if its module's globals carry the package's mark (``MACHINERY``), which each module of
the package puts there with :func:`count_as_machinery` when it is imported.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Literal

from pymoult import _cpython
from pymoult.errors import PymoultTypeError, ThreadStateError

#: A trace function, as ``sys.settrace`` takes and ``frame.f_trace`` holds: called as
#: ``trace(frame, event, arg)`` (event: ``'call'``, ``'line'``, ``'return'``, ``'exception'`` or
#: ``'opcode'``), it returns the frame's local trace (itself, another one or None).
TraceFunction = Callable[[FrameType, str, Any], "TraceFunction | None"]

log = logging.getLogger("pymoult")

#: One lock for every bookkeeping structure of the package. Reentrant: a trace function may call
#: set_trace from inside a callback that already holds it.
lock = threading.RLock()

#: While a trace is being installed (the frames armed and, on 3.10/3.11, _PyEval_SetTrace called),
#: keep other Python threads from being scheduled.
CRITICAL_SWITCH_INTERVAL = 0.005

#: The key that marks the globals of the package's modules. A key in the globals rather than a set
#: of their ids: the check runs at every call event of a traced thread, and a key lookup calls no
#: function (a set of ids cost the traced thread about 3-4% more instructions per call).
MACHINERY = "__pymoult_thread_trace_machinery__"


def count_as_machinery(module_globals: dict[str, Any]) -> None:
    """Count the frames and functions of the module whose globals are *module_globals* as the
    package's own machinery (never traced, left out of a thread's stack)."""
    module_globals[MACHINERY] = True


count_as_machinery(globals())


def check_thread(thread: object) -> None:
    if not isinstance(thread, threading.Thread):
        raise PymoultTypeError(
            "set_trace/get_trace need a threading.Thread, not %r (%s)"
            % (thread, type(thread).__name__)
        )


def check_alive(thread: threading.Thread) -> int:
    """The ident of *thread*, which must be running."""
    ident = thread.ident
    if ident is None or not thread.is_alive():
        state = "not started" if ident is None else "finished"
        raise ThreadStateError(
            "cannot trace thread %r: it is %s" % (thread.name, state) + " (%r)" % (thread,)
        )
    return ident


def stack_of(ident: int) -> list[FrameType]:
    """The frames of thread *ident*, innermost first, leaving out the package's frames and
    anything running above them (a callback of ours and the user trace it is calling)."""
    frame: FrameType | None = _cpython.current_frames().get(ident)
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    for i in range(len(frames) - 1, -1, -1):
        if MACHINERY in frames[i].f_globals:
            return frames[i + 1 :]
    return frames


class QuietSection:
    """Keep the other Python threads from running (raised switch interval) and, if *pin_threads*,
    keep every ``threading.Thread`` from finishing (its last act in Python takes this lock).
    A class rather than a ``contextlib`` generator: no foreign frame runs in here."""

    __slots__ = ("lock", "pinned", "old")

    def __init__(self, pin_threads: bool) -> None:
        self.lock: threading.RLock | None = (
            getattr(threading, "_active_limbo_lock", None) if pin_threads else None
        )
        self.pinned = False  # True only while self.lock is held by us
        self.old = 0.0  # the switch interval to restore, read by __enter__

    def __enter__(self) -> bool:
        # A timeout rather than a deadlock if, against all odds, the lock is held by a thread that
        # waits for us; without the pin the section is still protected by the switch interval.
        if self.lock is not None:
            self.pinned = self.lock.acquire(True, 1.0)
        self.old = sys.getswitchinterval()
        _cpython.set_switch_interval(max(self.old, CRITICAL_SWITCH_INTERVAL))
        return self.pinned

    def __exit__(self, *exc: object) -> Literal[False]:
        _cpython.set_switch_interval(self.old)
        if self.pinned:
            assert self.lock is not None  # pinned: __enter__ acquired it
            self.pinned = False
            self.lock.release()
        return False


def called_by_us(frame: FrameType) -> bool:
    """Whether *frame* was called by the package's machinery."""
    back = frame.f_back
    return back is not None and MACHINERY in back.f_globals


def log_trace_error(trace: object, thread: threading.Thread, note: str = "") -> None:
    log.error(
        "trace function %r raised in thread %r; its trace has been removed%s",
        trace,
        getattr(thread, "name", thread),
        note,
        exc_info=True,
    )
