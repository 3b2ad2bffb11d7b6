"""Suspending a thread wherever it is, without its cooperation: the trap.

The original Pymoult ran on a patched PyPy that could suspend any thread at the VM level. Stock
CPython cannot, so a thread asked to suspend *anywhere* is given a trap: a trace function
(``pymoult._thread_trace``, effective at the thread's next Python event without its help) that
parks it at the first safe place it reaches. A thread with static update points still parks at
its next point if it reaches one first; the trap is for threads that have none.

Where a thread may park
-----------------------
Never where it may hold a lock that the update, the manager or the runtime needs. The frames of
the *guarded* modules — the import system, ``threading``, ``logging``, ``queue``,
``concurrent.futures`` and Pymoult itself — may hold such locks, so a thread parks only in a frame
of other code (the application, its libraries, the rest of the standard library), and only when
no guarded frame lies between that frame and the thread's outermost unguarded frame: a thread
running the application's code inside ``logging`` (a custom handler) or inside an import (module
code) is left to run until it is back in plain application code. The guarded frames at the bottom
of a thread (``threading``'s bootstrap, Pymoult's runner) do not count.

When a thread counts as suspended
---------------------------------
- it is parked: at a static update point, or in the trap; or
- it is *dormant*: it runs no Python code now and will park before it runs any more application
  code. That is a thread whose innermost frames are unguarded (it is blocked in a C call such as
  ``time.sleep``, ``recv`` or ``select``, or waits for the GIL between two instructions), or whose
  innermost guarded frames are a blocking wait of ``threading`` or ``queue`` (``Event.wait``,
  ``Lock.acquire``, ``Thread.join``, ``Queue.get``...). Its unguarded frames are then traced
  instruction by instruction (``trace_opcodes``), so that when its C call or its wait returns it
  meets the trap before it runs one more instruction of them, not only at its next line.

What "suspended" does not promise
---------------------------------
- C code that runs without the GIL goes on (a dormant thread's ``sleep`` or ``recv`` runs to its
  end); a dormant thread that wakes runs the end of its ``threading`` or ``queue`` wait (their own
  code, not the application's) before it parks.
- Locks the application holds across a blocking call stay held while it is suspended: an update
  that needs one waits (and its patience runs out) rather than deadlock the manager only if it
  uses a timeout.
- On CPython 3.12+ a Python function called back from C code (a ``key=`` function, a ``__del__``,
  a property) whose code the suspended thread was never seen running gets no event, so a dormant
  thread whose C call calls back into such code runs that callback before it parks.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from types import CodeType, FrameType, ModuleType
from typing import Any, Protocol

from . import _cpython, _thread_trace
from ._thread_trace import TraceFunction

__all__ = ["is_guarded", "parkable", "make_trap", "arm_dormant", "why_not_suspended", "install",
           "get_trap", "remove", "where"]

logger = logging.getLogger("pymoult")


class TrapOwner(Protocol):
    """What a trap asks of the thread's control (``_parking.ThreadControl``)."""

    def trap_wanted(self) -> bool: ...

    def park_in_trap(self, where: str) -> None: ...

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _module_file(module: ModuleType) -> str:
    assert module.__file__ is not None  # the modules asked about are files of the stdlib
    return os.path.abspath(module.__file__)


def _guarded_prefixes() -> tuple[tuple[str, ...], set[str]]:
    import concurrent.futures
    import importlib
    import queue
    stdlib = []
    for module in (logging, importlib, concurrent.futures):  # packages: their whole directory
        stdlib.append(os.path.dirname(_module_file(module)) + os.sep)
    files = {_module_file(threading), _module_file(queue)}
    return tuple([_PACKAGE_DIR] + stdlib), files


_PREFIXES, _FILES = _guarded_prefixes()
_FROZEN = ("<frozen importlib", "<frozen zipimport")
#: Blocking waits of ``threading`` and ``queue`` a dormant thread may be in (function names).
_WAITS = frozenset({"wait", "wait_for", "acquire", "join", "_wait_for_tstate_lock", "get", "put"})

_guarded_cache: dict[str, bool] = {}
_CTYPES_DIR = os.path.dirname(os.path.dirname(_module_file(logging))) + os.sep + "ctypes"
_TRACE_FILES = frozenset(os.path.join(_PACKAGE_DIR, name)
                         for name in ("_suspension.py", "_parking.py"))
_TRACE_DIR = os.path.join(_PACKAGE_DIR, "_thread_trace") + os.sep


def is_guarded(code: CodeType) -> bool:
    """True if frames of ``code`` may hold a lock the update or the runtime needs."""
    filename = code.co_filename
    guarded = _guarded_cache.get(filename)
    if guarded is None:
        if filename.startswith(_FROZEN):
            guarded = True
        elif filename.startswith("<"):
            guarded = False  # an update script, code made by exec
        else:
            path = os.path.abspath(filename)
            guarded = path in _FILES or path.startswith(_PREFIXES)
        _guarded_cache[filename] = guarded
    return guarded


def _shape(frame: FrameType | None) -> tuple[list[FrameType], list[FrameType]] | None:
    """Split the stack from ``frame`` (innermost) outwards into (inner guarded frames,
    unguarded frames, outer guarded frames), or None when a guarded frame lies between two
    unguarded ones (the thread runs code called back by a guarded module)."""
    inner: list[FrameType] = []
    middle: list[FrameType] = []
    while frame is not None and is_guarded(frame.f_code):
        inner.append(frame)
        frame = frame.f_back
    while frame is not None and not is_guarded(frame.f_code):
        middle.append(frame)
        frame = frame.f_back
    while frame is not None:
        if not is_guarded(frame.f_code):
            return None
        frame = frame.f_back
    return inner, middle


def parkable(frame: FrameType) -> bool:
    """True if a thread whose innermost frame is ``frame`` may park there (see the notes)."""
    if is_guarded(frame.f_code):
        return False
    shape = _shape(frame)
    return shape is not None


def where(frame: FrameType) -> str:
    """``function (file:line)`` of ``frame``, for logs and messages."""
    code = frame.f_code
    return f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})"


def make_trap(control: TrapOwner) -> TraceFunction:
    """The trace function that parks ``control``'s thread at its first safe event."""

    def trap(frame: FrameType, event: str, arg: Any) -> TraceFunction | None:
        if not control.trap_wanted():
            return None
        if parkable(frame):
            control.park_in_trap(where(frame))
        return trap

    return trap


def arm_dormant(thread: threading.Thread) -> bool:
    """If ``thread`` is dormant (see the notes), make sure it parks before it runs another
    instruction of its unguarded frames, and return True; else False. Its trap must be set."""
    ident = thread.ident
    frame = None if ident is None else _cpython.current_frames().get(ident)
    if ident is None or frame is None:
        return False
    position = frame.f_lasti
    shape = _shape(frame)
    if shape is None:
        return False
    inner, middle = shape
    if not middle:
        return False  # only guarded frames: nothing of the application's left to run
    if inner:
        innermost = inner[0].f_code
        if innermost.co_name not in _WAITS or os.path.abspath(innermost.co_filename) not in _FILES:
            return False
    if not _thread_trace.trace_opcodes(thread, middle):
        return False
    # The thread may have taken the GIL while we looked: trust the answer only if it has not
    # moved (a thread that moved meets its trap soon; the next look decides).
    return _cpython.current_frames().get(ident) is frame and frame.f_lasti == position


def why_not_suspended(thread: threading.Thread) -> str:
    """A short text saying where ``thread`` runs and why it is not suspended yet."""
    ident = thread.ident
    frame = None if ident is None else _cpython.current_frames().get(ident)
    while frame is not None and (frame.f_code.co_filename in _TRACE_FILES
                                 or frame.f_code.co_filename.startswith((_TRACE_DIR, _CTYPES_DIR))):
        frame = frame.f_back  # the trap or the trace machinery deciding: where it was called
    if frame is None:
        return "it runs no Python code (starting or ending)"
    shape = _shape(frame)
    if shape is None:
        inner_app = next(f for f in _stack(frame) if not is_guarded(f.f_code))
        guarded = next(f for f in _stack(inner_app) if is_guarded(f.f_code))
        return (f"it runs {where(inner_app)} called back from {_module_name(guarded)} "
                f"({where(guarded)}), where it may hold that module's locks")
    inner, middle = shape
    if inner:
        return f"it is inside {_module_name(inner[-1])} ({where(inner[0])})"
    return f"it runs {where(frame)}"


def _stack(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _module_name(frame: FrameType) -> str:
    filename = frame.f_code.co_filename
    if filename.startswith(_FROZEN):
        return "the import system"
    path = os.path.abspath(filename)
    if path.startswith(_PACKAGE_DIR):
        return "Pymoult"
    for module in ("threading", "queue", "logging", "importlib", "concurrent"):
        if os.sep + module in path:
            return module if module != "importlib" else "the import system"
    return os.path.basename(path)


def install(thread: threading.Thread, trap: TraceFunction) -> bool:
    """Set ``trap`` on ``thread``; False if the thread has no Python frame right now."""
    try:
        _thread_trace.set_trace(thread, trap)
    except Exception as exc:  # not running Python right now (starting, ending): try later
        logger.debug("cannot set the suspension trap on %r yet: %s", thread, exc)
        return False
    return True


def get_trap(thread: threading.Thread) -> TraceFunction | None:
    """The trace function set on ``thread`` (a trap, or somebody else's), or None."""
    return _thread_trace.get_trace(thread)


def remove(thread: threading.Thread) -> None:
    """Take the trap off ``thread`` (it runs at full speed again)."""
    _thread_trace.set_trace(thread, None)

