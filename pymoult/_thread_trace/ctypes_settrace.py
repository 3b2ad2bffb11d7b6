"""Backend ``"ctypes"`` of ``pymoult._thread_trace`` (CPython 3.10, 3.11): another thread's C trace
function set with CPython's private ``_PyEval_SetTrace``.

Calls CPython's private ``_PyEval_SetTrace(PyThreadState *, Py_tracefunc, PyObject *)`` on the
target thread's state with a ctypes ``PYFUNCTYPE`` trampoline that emulates CPython's
``trace_trampoline`` (global trace on ``'call'``, ``frame.f_trace`` as the local trace), so the
target thread has an ordinary per-thread C trace function, as if it had called ``sys.settrace``
itself.

* The target's ``PyThreadState *`` is found by walking ``PyInterpreterState_ThreadHead`` /
  ``PyThreadState_Next`` and matching ``PyThreadState_GetFrame`` by address with
  ``sys._current_frames()[thread.ident]``. A thread state is freed by its own thread, holding the
  GIL, when it ends, so the walk is safe exactly if we keep the GIL from its first pointer to its
  last. The eval loop may give the GIL away between any two bytecodes (a thread whose wait for it
  timed out asks for it; under load the OS can stop us for longer than any switch interval), so the
  walk runs no bytecode at all: ``list()`` over ``itertools`` iterators that call the ctypes
  functions from C, with the cyclic GC paused; ``sys._current_frames()`` is taken in the same pass.
  Only an audit hook (``sys.addaudithook``) could run Python code in it. Around it,
  ``threading._active_limbo_lock`` is taken (no ``threading.Thread`` can finish meanwhile, so the
  target's state stays valid until ``_PyEval_SetTrace``) and ``sys.setswitchinterval`` is raised to
  at least 5 ms (restored after). A thread with no Python frame at that moment gets a
  ``ThreadStateError``.
* Costs: other threads pay nothing (the trace is per thread state). The traced thread pays a ctypes
  callback per line, call and return of every frame it runs, traced locally or not (about 7-11x on a
  tight loop with a trivial trace). Installing on another thread costs about 20-30 us, target idle
  or CPU-bound (measured on 3.10 and 3.11). Removal costs about 20-50 us (no walk: the thread state
  is remembered and the thread is pinned by the limbo lock).
* Limits: the trace occupies the target thread's single ``sys.settrace`` slot: a ``sys.settrace``
  call (a debugger, coverage) in that thread replaces it, ``set_trace`` replaces such a trace, and
  ``sys.gettrace()`` in the target returns an internal object while traced. Local traces live in
  ``frame.f_trace``.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from itertools import accumulate, chain, islice, repeat, takewhile, tee
from typing import TYPE_CHECKING, Any, cast

from pymoult import _cpython
from pymoult.errors import ThreadStateError

from .common import (
    MACHINERY,
    QuietSection,
    called_by_us,
    count_as_machinery,
    lock,
    log,
    log_trace_error,
    stack_of,
)

if TYPE_CHECKING:
    from types import FrameType

    from .common import TraceFunction

count_as_machinery(globals())
_get_ident = threading.get_ident

_api = ctypes.pythonapi
_missing = [
    name
    for name in (
        "_PyEval_SetTrace",
        "PyInterpreterState_Get",
        "PyInterpreterState_ThreadHead",
        "PyThreadState_Next",
        "PyThreadState_GetFrame",
        "PyThreadState_Get",
        "Py_DecRef",
    )
    if not hasattr(_api, name)
]
#: Why this backend cannot work here, or None.
UNSUPPORTED: str | None = None
if _missing:  # pragma: no cover - not on the CPython builds we support
    UNSUPPORTED = "this Python does not export %s (needed on CPython %d.%d)" % (
        ", ".join(_missing),
        sys.version_info[0],
        sys.version_info[1],
    )
else:
    eval_set_trace = _api._PyEval_SetTrace
    eval_set_trace.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    eval_set_trace.restype = ctypes.c_int
    interpreter_get = _api.PyInterpreterState_Get
    interpreter_get.argtypes = ()
    interpreter_get.restype = ctypes.c_void_p
    thread_head = _api.PyInterpreterState_ThreadHead
    thread_head.argtypes = (ctypes.c_void_p,)
    thread_head.restype = ctypes.c_void_p
    # PyThreadState_Next(tstate) as the function itertools.accumulate calls: (previous, element).
    # The element (always None, i.e. NULL) is an extra trailing argument, which the C function
    # never reads: harmless in the C calling conventions (the caller passes and removes it).
    # (A function's address: never NULL.)
    thread_next_of = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
        cast(int, ctypes.cast(_api.PyThreadState_Next, ctypes.c_void_p).value)
    )
    # A new reference, or NULL. Not restype=py_object: on a NULL result ctypes 3.10/3.11 calls
    # Py_DECREF(NULL) in GetResult and crashes (seen with threads starting or ending).
    thread_get_frame = _api.PyThreadState_GetFrame
    thread_get_frame.argtypes = (ctypes.c_void_p,)
    thread_get_frame.restype = ctypes.c_void_p
    dec_ref = _api.Py_DecRef
    dec_ref.argtypes = (ctypes.c_void_p,)
    dec_ref.restype = None
    tstate_get = _api.PyThreadState_Get
    tstate_get.argtypes = ()
    tstate_get.restype = ctypes.c_void_p

_PY_object = ctypes.py_object
_cast = ctypes.cast
_NONE_ADDR = id(None)
# PyTrace_CALL, EXCEPTION, LINE, RETURN, C_CALL, C_EXCEPTION, C_RETURN, OPCODE
_EVENT_NAMES = (
    "call", "exception", "line", "return", "c_call", "c_exception", "c_return", "opcode"
)

_states: dict[int, _CState] = {}  # ident -> its record


class _CState:
    """One traced thread; it is also the ``PyObject *obj`` given to ``_PyEval_SetTrace``, so the
    trampoline receives it directly and a stale one is recognised."""

    __slots__ = ("thread", "ident", "trace", "tstate", "bottom", "active", "installed")

    def __init__(self, thread: threading.Thread, ident: int, trace: TraceFunction) -> None:
        self.thread = thread
        self.ident = ident
        self.trace = trace
        self.tstate: int | None = None  # the thread's PyThreadState *, once found
        self.bottom: FrameType | None = None
        self.active = True
        self.installed = False

    def __repr__(self) -> str:
        return "<pymoult thread trace of %r: %r>" % (self.thread.name, self.trace)

    def stop_here(self) -> None:
        """Uninstall from inside the target thread (error in the trace, thread ending)."""
        with lock:
            self.active = False
            if _states.get(self.ident) is self:
                del _states[self.ident]
            if self.installed:
                self.installed = False
                sys.settrace(None)  # this thread's slot holds us: clear it
                for frame in stack_of(self.ident):
                    frame.f_trace = None


def _trampoline(state: _CState, frame: FrameType, what: int, arg: int | None) -> int:
    """Emulates CPython's trace_trampoline (Python/sysmodule.c); always returns 0."""
    try:
        if not state.active:
            if state.installed:
                state.stop_here()
            return 0
        callback: TraceFunction | None
        if what == 0:  # call
            if MACHINERY in frame.f_globals or called_by_us(frame):
                return 0
            callback = state.trace
        else:
            callback = frame.f_trace
        if callback is None:
            if what == 3 and frame is state.bottom:
                state.stop_here()
            return 0
        if arg is None or arg == _NONE_ADDR:
            value = None
        else:
            value = _cast(arg, _PY_object).value
        try:
            result = callback(frame, _EVENT_NAMES[what], value)
        except Exception:
            log_trace_error(callback, state.thread)
            if state.active and state.installed:
                state.stop_here()
            return 0
        except BaseException:
            log_trace_error(
                callback,
                state.thread,
                "; on CPython 3.10/3.11 a BaseException from a thread trace cannot be passed on "
                "to the thread and is dropped",
            )
            if state.active and state.installed:
                state.stop_here()
            return 0
        if what == 3:
            if frame is state.bottom:
                state.stop_here()
                return 0
        frame.f_trace = result
        return 0
    except BaseException:  # a bug of ours, or an asynchronous exception landing in our code
        log.error("pymoult: error in the thread trace trampoline (dropped)", exc_info=True)
        return 0


if not _missing:
    _Py_tracefunc = ctypes.PYFUNCTYPE(
        ctypes.c_int, ctypes.py_object, ctypes.py_object, ctypes.c_int, ctypes.c_void_p
    )
    _TRAMPOLINE = _Py_tracefunc(_trampoline)  # module-global: never freed
    _TRAMPOLINE_ADDR = ctypes.cast(_TRAMPOLINE, ctypes.c_void_p).value


# -- finding another thread's PyThreadState* safely --------------------------------------------
#
# A thread state is unlinked from the interpreter's list and freed by its own thread, holding
# the GIL, when that thread ends; it is used here only while this thread holds the GIL. The walk
# must therefore keep the GIL from its first pointer to its last, and the eval loop gives the
# GIL away between any two bytecodes if another thread asks for it (its wait for the GIL timed
# out: under load, the OS may stop this thread longer than any switch interval). So no bytecode
# runs during the walk: it is a single call of list() over itertools iterators, whose C code
# calls the ctypes functions directly. The one snapshot holds sys._current_frames() (which
# frame tops which thread) and every (thread state, top frame) pair, taken at the same instant.
# Nothing in it runs Python code: the collector is paused (its callbacks and finalizers would)
# and PyDLL functions keep the GIL; only an audit hook (sys.addaudithook) on the
# "sys._current_frames" or "ctypes.call_function" events would.

_NO_DICT = object()  # sentinel of iter(sys._current_frames, ...): never returned


def snapshot(interp: int | None) -> list[Any]:
    """[sys._current_frames(), (tstate, new reference to its top frame or None), ...] of every
    thread state of *interp*, all read without this thread letting go of the GIL."""
    walk = takewhile(
        bool, accumulate(chain(map(thread_head, (interp,)), repeat(None)), thread_next_of)
    )
    tstates, again = tee(walk)
    # sys._current_frames() itself, not _cpython.current_frames(): the caller pauses the
    # collector (so it is safe on 3.11 too), and that function's lock could make us wait.
    return list(chain(
        islice(iter(sys._current_frames, _NO_DICT), 1), zip(tstates, map(thread_get_frame, again))
    ))


def _find_tstate(ident: int) -> tuple[int | None, FrameType | None]:
    """(tstate pointer, top frame) of thread *ident*, or (None, frame or None).
    Called with the target pinned if possible; the pointer is valid while it is pinned."""
    with _cpython.pause_gc():
        taken = snapshot(interpreter_get())
    frames: dict[int, FrameType] = taken[0]
    pairs: list[tuple[int, int | None]] = taken[1:]
    top = frames.get(ident)
    target = id(top) if top is not None else None
    found = None
    for tstate, frame in pairs:
        if frame:
            if frame == target:  # a frame runs in one thread only
                found = tstate
            dec_ref(frame)  # the dict of the same instant holds it too
    return found, top


def _is_pinned(thread: threading.Thread, pinned: bool) -> bool:
    """Whether *thread* cannot finish while we hold the limbo lock."""
    active = getattr(threading, "_active", None)
    return (
        pinned
        and active is not None
        and active.get(thread.ident) is thread
        and not isinstance(thread, threading._DummyThread)
    )


def prune() -> None:
    for st in list(_states.values()):
        if not st.thread.is_alive():
            # Its thread state is gone (or going): it dropped our object; never touch it.
            st.active = False
            del _states[st.ident]


def install(thread: threading.Thread, ident: int, trace: TraceFunction) -> None:
    old = _states.get(ident)
    if old is not None and old.thread is thread and old.active and old.installed:
        old.trace = trace  # same slot: re-arm the frames of its stack with the new trace
        with QuietSection(pin_threads=False):
            for frame in stack_of(ident):
                frame.f_trace = trace
        return
    if old is not None:
        old.active = False
        del _states[ident]
    st = _CState(thread, ident, trace)
    if ident == _get_ident():
        stack = stack_of(ident)
        for frame in stack:
            frame.f_trace = trace
        st.bottom = stack[-1] if stack and stack[-1].f_back is None else None
        st.tstate = tstate_get()
        _states[ident] = st
        st.installed = True
        if eval_set_trace(st.tstate, _TRAMPOLINE_ADDR, id(st)) != 0:  # pragma: no cover
            raise ThreadStateError("_PyEval_SetTrace failed for thread %r" % (thread.name,))
        return  # nothing more: any Python call now would be traced
    with QuietSection(pin_threads=True) as pinned:
        active = getattr(threading, "_active", None)
        if not thread.is_alive() or (
            pinned and active is not None and active.get(ident) is not thread
        ):
            raise ThreadStateError(
                "cannot trace thread %r: it is finishing (%r)" % (thread.name, thread)
            )
        tstate, _top = _find_tstate(ident)
        if tstate is None:
            raise ThreadStateError(
                "cannot trace thread %r: no thread state with a running Python frame found "
                "for it (%r)" % (thread.name, thread)
            )
        stack = stack_of(ident)
        for frame in stack:
            frame.f_trace = trace
        st.bottom = stack[-1] if stack and stack[-1].f_back is None else None
        st.tstate = tstate
        _states[ident] = st
        st.installed = True
        try:
            rc = eval_set_trace(tstate, _TRAMPOLINE_ADDR, id(st))
        except BaseException:  # an audit hook refused it
            st.installed = False
            del _states[ident]
            for frame in stack:
                frame.f_trace = None
            raise
        if rc != 0:  # pragma: no cover
            raise ThreadStateError("_PyEval_SetTrace failed for thread %r" % (thread.name,))


def uninstall(thread: threading.Thread, ident: int) -> None:
    st = _states.get(ident)
    if st is None or st.thread is not thread:
        return
    del _states[ident]
    st.active = False
    if not st.installed:
        return
    if ident == _get_ident():
        st.installed = False
        sys.settrace(None)
        for frame in stack_of(ident):
            frame.f_trace = None
        return
    with QuietSection(pin_threads=True) as pinned:
        if _is_pinned(thread, pinned):
            st.installed = False
            eval_set_trace(st.tstate, None, None)
            for frame in stack_of(ident):
                frame.f_trace = None
        # else: the thread is finishing (or is a foreign thread whose state we cannot pin):
        # the trampoline sees the record inactive and clears the slot at its next event, and
        # the thread state drops our object when the thread ends.


def current_trace(thread: threading.Thread, ident: int) -> TraceFunction | None:
    st = _states.get(ident)
    if st is not None and st.thread is thread and st.active:
        return st.trace
    return None


def trace_opcodes(thread: threading.Thread, ident: int, frames: list[FrameType]) -> bool:
    st = _states.get(ident)
    if st is None or st.thread is not thread or not st.active or not st.installed:
        return False
    for frame in frames:
        if frame.f_trace is None:
            frame.f_trace = st.trace
        frame.f_trace_opcodes = True  # CPython then reports each instruction of the frame
    return True


def traced_idents() -> set[int]:
    """Idents of the threads that have a record here (for tests)."""
    return set(_states)
