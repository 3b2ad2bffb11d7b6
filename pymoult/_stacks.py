"""Reading the threads' stacks: which code objects mean a function is running, every thread's
stack (a parked one from its point's caller out), and whether one of given code objects runs.

Shared by ``pymoult.lowlevel.alterability`` (quiescence), ``pymoult.lowlevel.stack`` and
``pymoult.lowlevel.local_variables`` (what a reboot or a local-variable write targets) and
``pymoult.highlevel.module_update`` (the quiescence of what an update changes).
"""

from __future__ import annotations

import functools
import inspect
import os
import sysconfig
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from types import CodeType, FrameType
from typing import Any, Literal, Protocol, Union, cast, overload

from . import _cpython, _parking
from .errors import PymoultTypeError

__all__ = ["codes_of", "codes_of_all", "class_codes", "thread_stacks", "forget_stacks",
           "running_code", "library_of", "STDLIB", "SITE", "PACKAGE"]

#: The tops of each thread's stack, by thread ident (:func:`thread_stacks`): frames (walked out
#: through ``f_back``), or the summary of a stack that cannot have changed (parked, or idle).
Stacks = Mapping[int, Sequence[Union[FrameType, "_parking.StackSummary"]]]


class TornGuard(Protocol):
    """What :func:`running_code` asks of a ``TornCallGuard`` (``lowlevel.alterability``)."""

    def unsafe(self, code: CodeType) -> bool: ...

    def __bool__(self) -> bool: ...

#: Where the standard library, site-packages and Pymoult live: a frame's file tells whose it is.
STDLIB = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")})
SITE = tuple({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def codes_of(function: object) -> set[CodeType]:
    """The code objects whose frames mean ``function`` is running.

    Accepts functions, methods, code objects, ``staticmethod``/``classmethod``/``property``
    objects and wrappers with ``__wrapped__`` (``functools.wraps``, ``lru_cache``: the wrapper and
    every wrapped layer).
    """
    if isinstance(function, types.CodeType):
        return {function}
    codes: set[CodeType] = set()
    seen: set[int] = set()
    todo: list[Any] = [function]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (staticmethod, classmethod)):
            todo.append(obj.__func__)
        elif isinstance(obj, property):
            todo.extend(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
        elif isinstance(obj, (types.MethodType, functools.partial)):
            todo.append(obj.__func__ if isinstance(obj, types.MethodType) else obj.func)
        elif isinstance(obj, types.FunctionType):
            codes.add(obj.__code__)
            wrapped = obj.__dict__.get("__wrapped__")
            if wrapped is not None:
                todo.append(wrapped)
        elif len(seen) < 100 and callable(obj) and \
                isinstance(getattr(obj, "__wrapped__", None), types.FunctionType):
            todo.append(obj.__wrapped__)  # a C wrapper (lru_cache): its function's frames
        elif obj is not function:
            continue  # an odd wrapped layer (a builtin): it has no Python frames
        else:
            raise PymoultTypeError(
                f"cannot tell when {function!r} is running: it is not a Python function, "
                "method or code object")
    return codes


def codes_of_all(functions: Iterable[object]) -> set[CodeType]:
    if callable(functions) or isinstance(functions, (types.CodeType, staticmethod, classmethod,
                                                     property)):
        raise PymoultTypeError(f"expected a list of functions, got the function {functions!r}")
    codes: set[CodeType] = set()
    for function in functions:
        codes |= codes_of(function)
    return codes


def class_codes(cls: type) -> set[CodeType]:
    if not isinstance(cls, type):
        raise PymoultTypeError(f"expected a class, got {cls!r}")
    codes: set[CodeType] = set()
    for value in vars(cls).values():
        if isinstance(value, (types.FunctionType, staticmethod, classmethod, property)):
            codes |= codes_of(value)
    return codes


@overload
def thread_stacks(threads: Iterable[threading.Thread] | None = None,
                  from_points: Literal[False] = False) -> dict[int, list[FrameType]]: ...
@overload
def thread_stacks(threads: Iterable[threading.Thread] | None = None, *,
                  from_points: bool) -> dict[int, list[FrameType | _parking.StackSummary]]: ...


def thread_stacks(threads: Iterable[threading.Thread] | None = None,
                  from_points: bool = False) -> dict[int, list[Any]]:
    """{thread ident: [top frames]} for the given threads (None: every thread).

    A quiescence check pays this for every thread: only the threads known to have frames that
    ``_current_frames`` misses (a DSU_Thread whose continuation has run) are asked for them.

    With ``from_points`` (for :func:`running_code` alone, which reads the summaries), a stack
    that cannot have changed since it was last read is a ``_parking.StackSummary``, its code
    objects read once: the stack of a thread parked at a static update point, from the frame
    that called the point (the frames above it, the point's and the wait's, cannot be running
    application code); and the stack of a thread whose top frame is the very frame object it
    had at the previous such call (an idle thread, blocked in a wait). A frame that has not
    returned has the same callers as when it was called, so its stack is the same; a generator
    or coroutine frame is the exception (it may be resumed by another caller), and is walked
    every time. With many threads idle or parked, a repeated check (an update waiting for
    quiescence) costs a set test per thread (``benchmarks/bench_quiescence.py``).

    To tell, the top frames of the last such call are kept, and with them the objects they
    refer to: until the next call, or :func:`forget_stacks` (a manager calls it once an update
    has finished waiting).
    """
    # a fresh dict of ours: parked and unchanged threads' entries are replaced below
    frames = cast("dict[int, FrameType | _parking.StackSummary]", _cpython.current_frames())
    if from_points:
        frames.update(_parking.point_callers())  # a parked thread is alive: it is in frames
        _summarise_unchanged(frames)
    stacks: dict[int, list[FrameType | _parking.StackSummary]]
    if threads is None:
        stacks = {ident: [frame] for ident, frame in frames.items()}
    else:
        wanted = {t.ident for t in threads}
        stacks = {ident: [frame] for ident, frame in frames.items() if ident in wanted}
    for ident, frames_of in _parking.hidden_frames():
        tops = stacks.get(ident)
        if tops is not None:
            tops.extend(frames_of())
    return stacks


#: The stacks of the last ``thread_stacks(from_points=True)``, by thread ident: a top frame
#: seen once, or the StackSummary of one seen at least twice in a row.
_last_tops: dict[int, FrameType | _parking.StackSummary] = {}

#: Frames that may be resumed by a caller other than the one they had: not summarised.
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _summarise_unchanged(frames: dict[int, FrameType | _parking.StackSummary]) -> None:
    """Replace, in ``frames`` (ident -> top frame, or a parked thread's summary), each top
    frame that was the same frame object at the previous call by its StackSummary; remember
    this call's tops (not the calling thread's: its top is a new frame at every call)."""
    global _last_tops
    last = _last_tops
    summary_type = _parking.StackSummary
    for ident, frame in frames.items():
        seen = last.get(ident)
        if seen is None or type(frame) is summary_type:
            continue
        if seen is frame:  # the second time in a row: summarise it, unless it is resumable
            if not frame.f_code.co_flags & _RESUMABLE:  # type: ignore[union-attr]
                frames[ident] = summary_type(cast(FrameType, frame))
        elif type(seen) is summary_type and seen.frame is frame:
            frames[ident] = seen
    kept = frames.copy()  # replaced, not changed: a concurrent call reads a whole one
    kept.pop(threading.get_ident(), None)
    _last_tops = kept


def forget_stacks() -> None:
    """Drop the top frames :func:`thread_stacks` keeps between checks (and what they keep
    alive); the next check reads every stack again."""
    global _last_tops
    _last_tops = {}


def running_code(codes: Iterable[CodeType], stacks: Stacks | None,
                 torn: TornGuard | None = None) -> CodeType | None:
    """The first of ``codes`` that a frame in ``stacks`` (None: every thread's now) is running,
    or None. With ``torn`` (a :class:`TornCallGuard`), also the code of a frame it finds unsafe.

    The walk is the cost of a quiescence check (every frame of every thread): per frame, a test
    of the code's name (a set of interned strings, no call) comes first, and only a frame whose
    function has one of the names looked for is compared by identity (``id``, a call, and no
    code object hashed: hashing one hashes its constants). About 15% faster than testing
    ``id(frame.f_code)`` on every frame (``benchmarks/bench_quiescence.py``).

    A DSU_Thread's walk stops at its base (``_parking.ThreadBase``: the frame that calls its
    main and the ones below, Pymoult's and threading's), whose code objects were read when the
    thread started, unless one of them is looked for or unsafe: four frames fewer per thread.
    """
    if stacks is None:
        stacks = thread_stacks(from_points=True)
    names = frozenset(code.co_name for code in codes)
    code_ids = {id(code) for code in codes}
    unsafe = torn.unsafe if torn else None
    parked = _parking.StackSummary
    bases = _parking.thread_bases()
    found_in_base: dict[int, CodeType | None] = {}  # id(base codes) -> one looked for, or None
    for ident, tops in stacks.items():
        bottom = None  # where this thread's walk stops: None, or its base frame
        base = bases.get(ident)
        if base is not None:
            key = id(base.codes)  # the same tuple for every base made of the same code
            if key not in found_in_base:
                found_in_base[key] = next(
                    (code for code in base.codes
                     if id(code) in code_ids or (unsafe is not None and unsafe(code))), None)
            if found_in_base[key] is None:
                bottom = base.frame
        for frame in tops:
            if type(frame) is parked:  # its code objects, read once while it stays
                on_stack, parked_codes = frame.codes()
                if unsafe is None and names.isdisjoint(on_stack):
                    continue
                for code in parked_codes:
                    if code.co_name in names and id(code) in code_ids:
                        return code
                    if unsafe is not None and unsafe(code):
                        return code
                continue
            walk: Any = frame  # a frame (not a StackSummary: tested above); None past the end
            try:  # one test per frame for the loop's end: a chain that does not hold ``bottom``
                # ends at None, whose ``f_code`` raises the AttributeError caught below
                if unsafe is None:
                    while walk is not bottom:
                        code = walk.f_code
                        if code.co_name in names and id(code) in code_ids:
                            return code
                        walk = walk.f_back
                else:
                    while walk is not bottom:
                        code = walk.f_code
                        if code.co_name in names and id(code) in code_ids or unsafe(code):
                            return code
                        walk = walk.f_back
            except AttributeError:
                if walk is not None:  # not the end of a chain: the guard's own error
                    raise
    return None


def library_of(filename: str) -> str | None:
    """"pymoult" for a file of Pymoult, "stdlib" for one of the standard library (not of
    site-packages, which lives under it), None for the application's (or a third party's)."""
    if filename.startswith(PACKAGE):
        return "pymoult"
    if filename.startswith(STDLIB) and not filename.startswith(SITE):
        return "stdlib"
    return None
