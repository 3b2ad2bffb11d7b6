"""Backend ``"monitoring"`` of ``pymoult._thread_trace`` (CPython 3.12, 3.13): PEP 669
``sys.monitoring`` events, filtered on the traced thread.

The tool id is a free one, chosen among 3, 4 and 5 (0, 1 and 2 are left to
debuggers, coverage and profilers, e.g. ``cProfile`` uses 2 on 3.12+), taken when the first thread
is traced and freed, with every event and callback cleared, when the last one is removed or ends.

* *Local* events (``PY_START``, ``PY_RESUME``, ``PY_RETURN``, ``PY_YIELD``, ``CALL``, ``LINE``,
  ``JUMP``) are switched on for the code objects of the frames on the target's stack, and then for
  the code of every Python callee the target is seen calling: the ``CALL`` event enables local
  events on the callee's code (a function, a bound method, a ``functools.partial`` of one, a class's
  ``__init__``/``__new__``, an instance's Python ``__call__``) just before it starts, and its
  ``PY_START``/``PY_RESUME`` is reported as ``'call'``.
* ``RAISE``, ``PY_UNWIND`` and ``PY_THROW`` cannot be local in ``sys.monitoring``; they are switched
  on globally while any thread is traced (``'exception'`` events, ``'return'`` on exit by exception,
  ``'call'`` on ``generator.throw``).
* Every callback filters on ``threading.get_ident()``. A callback never returns
  ``sys.monitoring.DISABLE`` for a reason that depends on the thread (that would switch the event
  off for the traced thread too); it does return it for ``JUMP`` locations that can never produce a
  line event (forward jumps, jumps to another line, which ``LINE`` reports), exactly like CPython's
  own ``sys.settrace`` emulation does.
* Costs: nothing when no thread is traced. While a thread is traced, *other threads pay only when
  they run a code object the traced thread has been seen running while traced*: one Python callback
  (which returns at once) per line, call and return in that code. That is as slow as being traced:
  measured on 3.12, a thread looping over the same function as the traced one ran about 6-8x slower,
  and one calling a small helper that the traced thread also calls about 6x slower; a thread running
  code the traced thread never ran is not slowed down. Plus one callback per exception raised or
  unwound in a Python frame anywhere (``RAISE``/``PY_UNWIND`` are global). The traced thread pays a
  Python callback, and the trace, per line, call and return (about 8-12x on a tight loop with a
  trivial trace). Installing costs 25-50 us, removal 10-20 us; after removal every thread runs at
  full speed again.
* Limits: a Python frame started without a ``CALL`` event in traced code (a function called from C:
  ``sorted(key=f)``, ``map``, dunder methods run by operators, properties, ``__del__``, callbacks
  from C libraries; a generator created before installation and resumed afterwards) gets no
  ``'call'`` event unless its code object has already been seen; its callees are then not followed
  either (their code may have been seen before, in which case they are). Code objects stay
  instrumented while any thread is traced. ``JUMP`` and ``LINE`` are per code object, so a frame
  whose local trace is ``None`` still costs a (cheap) callback per line.
"""

from __future__ import annotations

import functools
import sys
import threading
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pymoult.errors import ThreadStateError, UnsupportedError

from .common import (
    MACHINERY,
    QuietSection,
    called_by_us,
    count_as_machinery,
    lock,
    log_trace_error,
    stack_of,
)

if TYPE_CHECKING:
    from types import CodeType, FrameType

    from .common import TraceFunction

# This module is imported on 3.12+ only (sys.monitoring): mypy skips the rest for older versions.
assert sys.version_info >= (3, 12)

count_as_machinery(globals())
_get_ident = threading.get_ident
_getframe = sys._getframe

#: Why this backend cannot work here, or None.
UNSUPPORTED: str | None = None

_M = sys.monitoring
_E = _M.events
_DISABLE = _M.DISABLE
_LOCAL_EVENTS = (
    _E.PY_START | _E.PY_RESUME | _E.PY_RETURN | _E.PY_YIELD | _E.CALL | _E.LINE | _E.JUMP
)
_GLOBAL_EVENTS = _E.RAISE | _E.PY_UNWIND | _E.PY_THROW
_TOOL_IDS = (3, 4, 5)
_TOOL_NAME = "pymoult"

_tool: int | None = None  # the tool id we hold, while any thread is traced
_states: dict[int, _MState] = {}  # ident -> its record (read without the lock by the callbacks)
_code_users: dict[CodeType, int] = {}  # code -> number of states that enabled local events on it
_line_maps: dict[CodeType, dict[int, int | None]] = {}  # code -> {offset: line}, for JUMP events


class _MState:
    """What we know about one traced thread."""

    __slots__ = ("thread", "ident", "trace", "locals", "codes", "bottom", "active", "opcodes",
                 "opcode_codes")

    def __init__(self, thread: threading.Thread, ident: int) -> None:
        self.thread = thread
        self.ident = ident
        self.trace: TraceFunction | None = None
        self.locals: dict[FrameType, TraceFunction] = {}  # frame -> local trace
        self.codes: set[CodeType] = set()  # code objects this state enabled
        # The outermost frame at installation: its exit ends the trace.
        self.bottom: FrameType | None = None
        self.active = True
        self.opcodes: set[FrameType] = set()  # frames that get an 'opcode' event per instruction
        # Their code objects, with INSTRUCTION events enabled.
        self.opcode_codes: set[CodeType] = set()

    def enable(self, code: CodeType) -> None:
        with lock:
            if not self.active or code in self.codes or _tool is None:
                return
            n = _code_users.get(code, 0)
            if n == 0:
                try:
                    _M.set_local_events(_tool, code, _LOCAL_EVENTS)
                except (ValueError, TypeError):  # pragma: no cover - defensive
                    return
            _code_users[code] = n + 1
            self.codes.add(code)

    def call_event(self, frame: FrameType) -> None:
        trace = self.trace
        if trace is None or not self.active:
            return
        try:
            local = trace(frame, "call", None)
        except Exception:
            self.fail(trace)
            return
        except BaseException:  # control flow: drop the trace, let it reach the thread
            self.finish()
            raise
        if local is None:
            self.locals.pop(frame, None)
        else:
            self.locals[frame] = local

    def local_event(
        self, frame: FrameType, local: TraceFunction, event: str, arg: Any
    ) -> None:
        try:
            new = local(frame, event, arg)
        except Exception:
            self.fail(local)
            return
        except BaseException:  # control flow: drop the trace, let it reach the thread
            self.finish()
            raise
        if event == "return":
            return
        if new is None:
            self.locals.pop(frame, None)
        elif new is not local:
            self.locals[frame] = new

    def fail(self, culprit: TraceFunction) -> None:
        log_trace_error(culprit, self.thread)
        with lock:
            if _states.get(self.ident) is self:
                _remove_state(self)

    def finish(self) -> None:
        with lock:
            if _states.get(self.ident) is self:
                _remove_state(self)


def _build_line_map(code: CodeType) -> dict[int, int | None]:
    lines: dict[int, int | None] = {}
    for start, end, line in code.co_lines():
        for offset in range(start, end, 2):
            lines[offset] = line
    _line_maps[code] = lines
    return lines


def _callee_codes(obj: Any, depth: int = 0) -> Iterable[CodeType]:
    """Code objects a CALL of *obj* may start (Python code only, not ours). *obj* is any object
    (Any: dispatched on its exact type, which mypy does not narrow through ``t``)."""
    t = type(obj)
    if t is types.FunctionType:
        return () if MACHINERY in obj.__globals__ else (obj.__code__,)
    if depth > 3:
        return ()
    if t is types.MethodType:
        return _callee_codes(obj.__func__, depth + 1)
    if t is functools.partial:
        return _callee_codes(obj.func, depth + 1)
    try:
        if isinstance(obj, type):
            codes: list[CodeType] = []
            for name in ("__new__", "__init__"):
                f = getattr(obj, name, None)
                if type(f) is types.FunctionType and MACHINERY not in f.__globals__:
                    codes.append(f.__code__)
            return codes
        call = getattr(t, "__call__", None)
    except Exception:  # a metaclass with a strange __getattr__
        return ()
    if type(call) is types.FunctionType and MACHINERY not in call.__globals__:
        return (call.__code__,)
    return ()


# -- callbacks: all of them run in whichever thread produced the event ---------------------

def _on_start(code: CodeType, offset: int) -> object:  # PY_START, PY_RESUME
    st = _states.get(_get_ident())
    if st is None:
        return None
    frame = _getframe(1)
    if frame.f_code is code and not called_by_us(frame):
        st.call_event(frame)
    return None


def _on_throw(code: CodeType, offset: int, exc: BaseException) -> object:  # PY_THROW (global)
    st = _states.get(_get_ident())
    if st is None:
        return None
    frame = _getframe(1)
    if frame.f_code is code:
        if code not in st.codes:
            st.enable(code)
        st.call_event(frame)
    return None


def _on_call(code: CodeType, offset: int, callable_: object, arg0: object) -> object:  # CALL
    st = _states.get(_get_ident())
    if st is None:
        return None
    codes = st.codes
    for c in _callee_codes(callable_):
        if c not in codes:
            st.enable(c)
    return None


def _on_line(code: CodeType, line: int) -> object:  # LINE (the hot path: local_event inlined)
    st = _states.get(_get_ident())
    if st is None:
        return None
    frame = _getframe(1)
    local = st.locals.get(frame)
    if local is None:
        return None
    try:
        new = local(frame, "line", None)
    except Exception:
        st.fail(local)
        return None
    except BaseException:
        st.finish()
        raise
    if new is not local:
        if new is None:
            st.locals.pop(frame, None)
        else:
            st.locals[frame] = new
    return None


def _on_jump(code: CodeType, offset: int, dest: int) -> object:  # JUMP
    if dest > offset:
        return _DISABLE  # a forward jump never makes a line event, whatever the thread
    lines = _line_maps.get(code)
    if lines is None:
        lines = _build_line_map(code)
    line = lines.get(dest)
    if line is None or line != lines.get(offset):
        return _DISABLE  # another line: LINE reports it, whatever the thread
    st = _states.get(_get_ident())
    if st is None:
        return None
    frame = _getframe(1)
    local = st.locals.get(frame)
    if local is not None:
        st.local_event(frame, local, "line", None)
    return None


def _on_return(code: CodeType, offset: int, retval: object) -> object:  # PY_RETURN, PY_YIELD
    st = _states.get(_get_ident())
    if st is None:
        return None
    frame = _getframe(1)
    local = st.locals.pop(frame, None)
    if local is not None:
        st.local_event(frame, local, "return", retval)
    if frame is st.bottom:
        st.finish()
    return None


def _on_unwind(code: CodeType, offset: int, exc: BaseException) -> object:  # PY_UNWIND (global)
    st = _states.get(_get_ident())
    if st is None:
        return None
    frame = _getframe(1)
    local = st.locals.pop(frame, None)
    if local is not None:
        st.local_event(frame, local, "return", None)
    if frame is st.bottom:
        st.finish()
    return None


def _on_raise(code: CodeType, offset: int, exc: BaseException) -> object:  # RAISE (global)
    st = _states.get(_get_ident())
    if st is None:
        return None
    frame = _getframe(1)
    local = st.locals.get(frame)
    if local is not None:
        st.local_event(frame, local, "exception", (type(exc), exc, exc.__traceback__))
    return None


# INSTRUCTION (local, only while opcode frames exist)
def _on_instruction(code: CodeType, offset: int) -> object:
    st = _states.get(_get_ident())
    if st is None or not st.opcodes:
        return None
    frame = _getframe(1)
    if frame in st.opcodes:
        local = st.locals.get(frame)
        if local is not None:
            st.local_event(frame, local, "opcode", None)
    return None


_CALLBACKS = (
    (_E.INSTRUCTION, _on_instruction),
    (_E.PY_START, _on_start),
    (_E.PY_RESUME, _on_start),
    (_E.PY_THROW, _on_throw),
    (_E.CALL, _on_call),
    (_E.LINE, _on_line),
    (_E.JUMP, _on_jump),
    (_E.PY_RETURN, _on_return),
    (_E.PY_YIELD, _on_return),
    (_E.PY_UNWIND, _on_unwind),
    (_E.RAISE, _on_raise),
)


# -- tool id and bookkeeping (caller holds lock) ----------------------------------------------

def _acquire_tool() -> None:
    global _tool
    taken: list[str] = []
    for tid in _TOOL_IDS:
        owner = _M.get_tool(tid)
        if owner is not None:
            taken.append("%d=%r" % (tid, owner))
            continue
        try:
            _M.use_tool_id(tid, _TOOL_NAME)
        except ValueError:  # taken between get_tool and use_tool_id
            taken.append("%d=%r" % (tid, _M.get_tool(tid)))
            continue
        for event, callback in _CALLBACKS:
            _M.register_callback(tid, event, callback)
        _M.set_events(tid, _GLOBAL_EVENTS)
        _tool = tid
        return
    raise UnsupportedError(
        "no free sys.monitoring tool id for thread tracing: ids %s are all taken (%s)"
        % (", ".join(map(str, _TOOL_IDS)), ", ".join(taken))
    )


def _release_tool() -> None:
    global _tool
    tid, _tool = _tool, None
    if tid is None:
        return
    for code in list(_code_users):  # normally already empty
        _M.set_local_events(tid, code, 0)
    _code_users.clear()
    _opcode_users.clear()
    _line_maps.clear()
    _M.set_events(tid, 0)
    for event, _callback in _CALLBACKS:
        _M.register_callback(tid, event, None)
    _M.free_tool_id(tid)


def _remove_state(st: _MState) -> None:
    if _states.get(st.ident) is st:
        del _states[st.ident]
    st.active = False
    st.trace = None
    st.locals.clear()
    st.bottom = None
    st.opcodes.clear()
    for code in st.opcode_codes:
        _drop_opcode_user(code)
    st.opcode_codes.clear()
    for code in st.codes:
        n = _code_users.get(code, 0) - 1
        if n > 0:
            _code_users[code] = n
        else:
            _code_users.pop(code, None)
            _line_maps.pop(code, None)
            if _tool is not None:
                _M.set_local_events(_tool, code, 0)
    st.codes.clear()
    if not _states:
        _release_tool()


# code object -> number of states that want INSTRUCTION events on it
_opcode_users: dict[CodeType, int] = {}


def _drop_opcode_user(code: CodeType) -> None:
    n = _opcode_users.get(code, 0) - 1
    if n > 0:
        _opcode_users[code] = n
        return
    _opcode_users.pop(code, None)
    if _tool is not None:
        _M.set_local_events(_tool, code, _LOCAL_EVENTS if code in _code_users else 0)


def trace_opcodes(thread: threading.Thread, ident: int, frames: list[FrameType]) -> bool:
    st = _states.get(ident)
    if st is None or st.thread is not thread or not st.active:
        return False
    tool = _tool
    assert tool is not None  # held while any thread, st's included, is traced
    for frame in frames:
        st.opcodes.add(frame)
        code = frame.f_code
        if code in st.opcode_codes:
            continue
        st.enable(code)
        if code not in st.codes:
            continue
        st.opcode_codes.add(code)
        n = _opcode_users.get(code, 0)
        if n == 0:
            _M.set_local_events(tool, code, _LOCAL_EVENTS | _E.INSTRUCTION)
        _opcode_users[code] = n + 1
    return True


def prune() -> None:
    for st in list(_states.values()):
        if not st.thread.is_alive():
            _remove_state(st)


def install(thread: threading.Thread, ident: int, trace: TraceFunction) -> None:
    st = _states.get(ident)
    if st is not None and st.thread is not thread:  # stale record of a thread with the same ident
        _remove_state(st)
        st = None
    if _tool is None:
        _acquire_tool()
    fresh = st is None
    if st is None:
        st = _MState(thread, ident)
    with QuietSection(pin_threads=False):
        stack = stack_of(ident)
        if not stack:
            if fresh and not _states:
                _release_tool()
            raise ThreadStateError(
                "cannot trace thread %r: it has no Python frame running right now (%r)"
                % (thread.name, thread)
            )
        st.trace = trace
        st.locals.clear()
        for frame in stack:
            st.locals[frame] = trace
        st.bottom = stack[-1] if stack[-1].f_back is None else None
        _states[ident] = st
        for frame in stack:
            st.enable(frame.f_code)
        # Frames the target started while we were arming the first ones.
        seen = set(stack)
        for _ in range(5):
            new = [f for f in stack_of(ident) if f not in seen]
            if not new:
                break
            for frame in new:
                seen.add(frame)
                st.locals[frame] = trace
                st.enable(frame.f_code)


def uninstall(thread: threading.Thread, ident: int) -> None:
    st = _states.get(ident)
    if st is not None and st.thread is thread:
        _remove_state(st)


def current_trace(thread: threading.Thread, ident: int) -> TraceFunction | None:
    st = _states.get(ident)
    if st is not None and st.thread is thread and st.active:
        return st.trace
    return None


def traced_idents() -> set[int]:
    """Idents of the threads that have a record here (for tests)."""
    return set(_states)
