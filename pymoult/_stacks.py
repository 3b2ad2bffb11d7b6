"""Reading the threads' stacks: which code objects mean a function is running, every thread's
stack (a parked one from its point's caller out), and whether one of given code objects runs.

Shared by ``pymoult.lowlevel.alterability`` (quiescence), ``pymoult.lowlevel.stack`` and
``pymoult.lowlevel.local_variables`` (what a reboot or a local-variable write targets) and
``pymoult.highlevel.module_update`` (the quiescence of what an update changes).
"""

from __future__ import annotations

import functools
import os
import sysconfig
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from types import CodeType, FrameType
from typing import Any, Literal, Protocol, Union, cast, overload

from . import _cpython, _parking
from .errors import PymoultTypeError

__all__ = ["codes_of", "codes_of_all", "class_codes", "thread_stacks", "running_code",
           "library_of", "STDLIB", "SITE", "PACKAGE"]

#: The tops of each thread's stack, by thread ident (:func:`thread_stacks`): frames (walked out
#: through ``f_back``), or the summary of a parked thread's stack.
Stacks = Mapping[int, Sequence[Union[FrameType, "_parking.ParkedStack"]]]


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
                  from_points: bool) -> dict[int, list[FrameType | _parking.ParkedStack]]: ...


def thread_stacks(threads: Iterable[threading.Thread] | None = None,
                  from_points: bool = False) -> dict[int, list[Any]]:
    """{thread ident: [top frames]} for the given threads (None: every thread).

    A quiescence check pays this for every thread: only the threads known to have frames that
    ``_current_frames`` misses (a DSU_Thread whose continuation has run) are asked for them.
    With ``from_points``, the stack of a thread parked at a static update point starts at the
    frame that called the point: the frames above it (the point's, the wait's) cannot be running
    application code, and skipping them keeps a check of parked threads as cheap as one of idle
    threads (``benchmarks/bench_quiescence.py``). Such a stack is a ``_parking.ParkedStack``
    (its code objects read once per park), which only :func:`_running_code` reads.
    """
    # a fresh dict of ours: parked threads' entries are replaced by their ParkedStack below
    frames = cast("dict[int, FrameType | _parking.ParkedStack]", _cpython.current_frames())
    if from_points:
        frames.update(_parking.point_callers())  # a parked thread is alive: it is in frames
    stacks: dict[int, list[FrameType | _parking.ParkedStack]]
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


def running_code(codes: Iterable[CodeType], stacks: Stacks | None,
                 torn: TornGuard | None = None) -> CodeType | None:
    """The first of ``codes`` that a frame in ``stacks`` (None: every thread's now) is running,
    or None. With ``torn`` (a :class:`TornCallGuard`), also the code of a frame it finds unsafe.

    The walk is the cost of a quiescence check (every frame of every thread): per frame, a test
    of the code's name (a set of interned strings, no call) comes first, and only a frame whose
    function has one of the names looked for is compared by identity (``id``, a call, and no
    code object hashed: hashing one hashes its constants). About 15% faster than testing
    ``id(frame.f_code)`` on every frame (``benchmarks/bench_quiescence.py``).
    """
    if stacks is None:
        stacks = thread_stacks(from_points=True)
    names = frozenset(code.co_name for code in codes)
    code_ids = {id(code) for code in codes}
    unsafe = torn.unsafe if torn else None
    parked = _parking.ParkedStack
    for tops in stacks.values():
        for frame in tops:
            if type(frame) is parked:  # its code objects, read once per park
                on_stack, parked_codes = frame.codes()
                if unsafe is None and names.isdisjoint(on_stack):
                    continue
                for code in parked_codes:
                    if code.co_name in names and id(code) in code_ids:
                        return code
                    if unsafe is not None and unsafe(code):
                        return code
                continue
            walk: FrameType | None = cast(FrameType, frame)  # not a ParkedStack: tested above
            while walk is not None:
                code = walk.f_code
                if code.co_name in names and id(code) in code_ids:
                    return code
                if unsafe is not None and unsafe(code):
                    return code
                walk = walk.f_back
    return None


def library_of(filename: str) -> str | None:
    """"pymoult" for a file of Pymoult, "stdlib" for one of the standard library (not of
    site-packages, which lives under it), None for the application's (or a third party's)."""
    if filename.startswith(PACKAGE):
        return "pymoult"
    if filename.startswith(STDLIB) and not filename.startswith(SITE):
        return "stdlib"
    return None
