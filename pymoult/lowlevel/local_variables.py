"""Writing local variables of frames running in other threads.

:func:`updateLocalVarInThread` and :func:`updateLocalVar` change a local variable of frames that
are running in other threads, whether those threads are running Python, parked at an update
point, or blocked in ``time.sleep``, ``Event.wait`` or I/O (the new value is there when the call
returns). The frames are found on the threads' stacks and written inside a stop-the-world window,
so the thread sees the write between two bytecodes, never half-way. The mechanism differs by
version (``pymoult._cpython.write_frame_local``): a write-through ``f_locals`` on 3.13, a
snapshot copied back with ``PyFrame_LocalsToFast`` before.

Limits: only existing local names can be written (arguments, assigned locals, cell and free
variables; deleting a local is not offered: CPython versions disagree on it). A ``for`` loop
variable changes for the current iteration only (the iterator sets the next value). Frames of a
suspended generator or greenlet are not on any thread's stack and are not reached.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from types import CodeType, FrameType
from typing import TYPE_CHECKING

from .. import _cpython
from ..errors import PymoultTypeError, PymoultValueError, TargetNotFoundError
from .._stacks import codes_of
from .journal import MISSING, Operation, current_journal, describe
from .world import stop_the_world

if TYPE_CHECKING:
    from .journal import Journal

#: A frame found running, with its thread (its ident if the thread is not a ``Thread`` object).
RunningFrame = tuple[threading.Thread | int, FrameType]

__all__ = ["updateLocalVar", "updateLocalVarInThread", "WriteLocal"]


def _frame_is_running(frame: FrameType) -> bool:
    top: FrameType | None
    for top in _cpython.current_frames().values():
        while top is not None:
            if top is frame:
                return True
            top = top.f_back
    return False


class WriteLocal(Operation):
    """A local variable of a live frame was set; undo writes the old value back if the frame is
    still running (a frame that has exited has no state left to restore)."""

    def __init__(self, frame: FrameType, name: str, old: object, new: object,
                 thread: threading.Thread | int) -> None:
        self.frame, self.name, self.old, self.new, self.thread = frame, name, old, new, thread
        was = "was unbound" if old is MISSING else f"was {old!r}"[:60]
        self.text = (f"set local {name!r} of {describe(frame.f_code)} in "
                     f"{getattr(thread, 'name', thread)!r} ({was})")

    def undo(self) -> None:
        if self.old is MISSING:
            raise PymoultValueError(f"local {self.name!r} was unbound before the update and "
                                    "cannot be unbound again portably; it keeps the new value")
        with stop_the_world():
            if _frame_is_running(self.frame):
                _cpython.write_frame_local(self.frame, self.name, self.old)


def _local_names(code: CodeType) -> set[str]:
    return set(code.co_varnames) | set(code.co_cellvars) | set(code.co_freevars)


def _check_name(codes: Collection[CodeType], func: object, name: object) -> None:
    if not isinstance(name, str):
        raise PymoultTypeError(f"a local variable name must be a str, got {name!r}")
    for code in codes:
        if name in _local_names(code):
            return
    known = sorted(set().union(*(_local_names(code) for code in codes)))
    raise PymoultValueError(f"{describe(func)} has no local variable {name!r} "
                            f"(its locals: {known})")


def _write(frames: Iterable[RunningFrame], name: str, value: object,
           journal: Journal | None) -> int:
    """Write ``name`` in every (thread, frame); returns how many were written."""
    written = 0
    with stop_the_world():
        for thread, frame in frames:
            if not _frame_is_running(frame):
                continue
            old = frame.f_locals.get(name, MISSING)
            _cpython.write_frame_local(frame, name, value)
            if journal is not None:
                journal.record(WriteLocal(frame, name, old, value, thread))
            written += 1
    return written


def _frames_running(codes: Iterable[CodeType],
                    thread_idents: Collection[int | None]) -> list[RunningFrame]:
    """(thread, frame) for every frame of ``codes`` on the stacks of the given thread idents."""
    code_ids = {id(code) for code in codes}
    threads = {t.ident: t for t in threading.enumerate()}
    found: list[RunningFrame] = []
    frame: FrameType | None
    for ident, frame in _cpython.current_frames().items():
        if ident not in thread_idents:
            continue
        while frame is not None:
            if id(frame.f_code) in code_ids:
                found.append((threads.get(ident, ident), frame))
            frame = frame.f_back
    return found


def updateLocalVarInThread(thread: threading.Thread, func: object, name: str, value: object,
                           journal: Journal | None = None) -> int:
    """Set local ``name`` to ``value`` in every frame of ``func`` running in ``thread``.

    Returns the number of frames written. Raises ``TargetNotFoundError`` if ``func`` is not
    running there (or its frames exit before the write), ``PymoultValueError`` if ``func`` has no
    such local.
    """
    if not isinstance(thread, threading.Thread):
        raise PymoultTypeError(f"expected a thread, got {thread!r}")
    codes = codes_of(func)
    _check_name(codes, func, name)
    written = _write(_frames_running(codes, {thread.ident}), name, value, current_journal(journal))
    if not written:
        raise TargetNotFoundError(f"{describe(func)} is not running in {thread.name!r}",
                                  target=func)
    return written


def updateLocalVar(func: object, name: str, value: object,
                   journal: Journal | None = None) -> int:
    """Set local ``name`` to ``value`` in every frame of ``func`` in every *other* thread.

    Returns the number of frames written; ``TargetNotFoundError`` if none is running.
    """
    codes = codes_of(func)
    _check_name(codes, func, name)
    others = set(_cpython.current_frames()) - {threading.get_ident()}
    written = _write(_frames_running(codes, others), name, value, current_journal(journal))
    if not written:
        raise TargetNotFoundError(f"{describe(func)} is not running in any other thread",
                                  target=func)
    return written
