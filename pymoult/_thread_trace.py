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
  their local trace, so the next ``'line'`` event of the frame the target is running reaches ``trace``
  at once: a thread spinning in a loop that calls nothing, or blocked in ``Event.wait``/``time.sleep``
  (once it resumes), is caught without calling anything (the original Pymoult "sets the trace for the
  given thread, then triggers it immediately").
* Local traces get ``'line'``, ``'return'`` (arg: the returned or yielded value, ``None`` when the
  frame is left by an exception) and ``'exception'`` (arg: ``(type, value, traceback)``). Their return
  value replaces the local trace; ``None`` stops local tracing of that frame. (This is what the
  ``sys.settrace`` documentation promises; CPython's own ``sys.settrace`` actually *keeps* the old local
  trace when one returns ``None``. This module follows the documentation.)
* A loop jumping back to the line it is on gives a ``'line'`` event per iteration, as with
  ``sys.settrace``.

Installing a trace on a thread that already has one replaces it (and re-arms every frame on its
stack with the new one). ``set_trace(thread, None)`` removes it; other threads are never slowed down
by a removed trace and the target goes back to full speed. Several threads can be traced at once,
with different traces. Both functions are thread-safe and may be called from any thread, including
from the trace function itself (a trace may remove itself with ``set_trace(current_thread(), None)``).

Errors in the trace function: an ``Exception`` raised by the trace (global or local) is logged on the
``"pymoult"`` logger with its traceback, the trace is removed for that thread, and the target thread
carries on as if nothing had happened (CPython's ``sys.settrace`` instead propagates the exception
into the traced code: an update-point probe must never kill the application thread it watches).
A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``, a control-flow
exception such as a reboot request, raised by the trace or delivered asynchronously while it runs)
also removes the trace; then the backends differ, because a ctypes callback cannot raise into its C
caller:

* monitoring (3.12+): it propagates into the target thread from the point of the event, exactly as
  with ``sys.settrace``;
* ctypes (3.10/3.11): it cannot be passed on; it is logged (with its traceback) and dropped. (Re-raising
  it asynchronously with ``PyThreadState_SetAsyncExc`` does not work either: it lands in the
  trampoline's own bytecode, right after the call, before control returns to C.)

An event that is already being dispatched in the target thread when another thread removes or
replaces the trace may still reach the old trace (at most that one event).

A traced thread that ends is cleaned up: the trace is dropped when the outermost frame that was on
its stack at installation (``Thread._bootstrap`` for a ``threading.Thread``) returns, and every call
of ``set_trace``/``get_trace`` also prunes the records of threads that are no longer alive.

Backend ``"monitoring"`` (CPython 3.12, 3.13)
---------------------------------------------
Uses PEP 669 ``sys.monitoring`` with a free tool id, chosen among 3, 4 and 5 (0, 1 and 2 are left to
debuggers, coverage and profilers, e.g. ``cProfile`` uses 2 on 3.12+), taken when the first thread is
traced and freed, with every event and callback cleared, when the last one is removed or ends.

* *Local* events (``PY_START``, ``PY_RESUME``, ``PY_RETURN``, ``PY_YIELD``, ``CALL``, ``LINE``,
  ``JUMP``) are switched on for the code objects of the frames on the target's stack, and then for
  the code of every Python callee the target is seen calling: the ``CALL`` event enables local events
  on the callee's code (a function, a bound method, a ``functools.partial`` of one, a class's
  ``__init__``/``__new__``, an instance's Python ``__call__``) just before it starts, and its
  ``PY_START``/``PY_RESUME`` is reported as ``'call'``.
* ``RAISE``, ``PY_UNWIND`` and ``PY_THROW`` cannot be local in ``sys.monitoring``; they are switched on
  globally while any thread is traced (``'exception'`` events, ``'return'`` on exit by exception,
  ``'call'`` on ``generator.throw``).
* Every callback filters on ``threading.get_ident()``. A callback never returns
  ``sys.monitoring.DISABLE`` for a reason that depends on the thread (that would switch the event off
  for the traced thread too); it does return it for ``JUMP`` locations that can never produce a line
  event (forward jumps, jumps to another line, which ``LINE`` reports), exactly like CPython's own
  ``sys.settrace`` emulation does.
* Costs: nothing when no thread is traced. While a thread is traced, *other threads pay only when they
  run a code object the traced thread has been seen running while traced*: one Python callback
  (which returns at once) per line, call and return in that code. That is as slow as being traced:
  measured on 3.12, a thread looping over the same function as the traced one ran about 6-8x slower,
  and one calling a small helper that the traced thread also calls about 6x slower; a thread
  running code the traced thread never ran is not slowed down. Plus one callback per exception
  raised or unwound in a Python frame anywhere (``RAISE``/``PY_UNWIND`` are global). The traced
  thread pays a Python callback, and the trace, per line, call and return (about 8-12x on a tight
  loop with a trivial trace). Installing costs 25-50 us, removal 10-20 us; after removal every
  thread runs at full speed again.
* Limits: a Python frame started without a ``CALL`` event in traced code (a function called from C:
  ``sorted(key=f)``, ``map``, dunder methods run by operators, properties, ``__del__``, callbacks from
  C libraries; a generator created before installation and resumed afterwards) gets no ``'call'``
  event unless its code object has already been seen; its callees are then not followed either (their
  code may have been seen before, in which case they are). Code objects stay instrumented while any
  thread is traced. ``JUMP`` and ``LINE`` are per code object, so a frame whose local trace is
  ``None`` still costs a (cheap) callback per line.

Backend ``"ctypes"`` (CPython 3.10, 3.11)
-----------------------------------------
Calls CPython's private ``_PyEval_SetTrace(PyThreadState *, Py_tracefunc, PyObject *)`` on the target
thread's state with a ctypes ``PYFUNCTYPE`` trampoline that emulates CPython's ``trace_trampoline``
(global trace on ``'call'``, ``frame.f_trace`` as the local trace), so the target thread has an
ordinary per-thread C trace function, as if it had called ``sys.settrace`` itself.

* The target's ``PyThreadState *`` is found by walking ``PyInterpreterState_ThreadHead`` /
  ``PyThreadState_Next`` and matching ``PyThreadState_GetFrame`` by address with
  ``sys._current_frames()[thread.ident]``. A thread state is freed by its own thread, holding the
  GIL, when it ends, so the walk is safe exactly if we keep the GIL from its first pointer to its
  last. The eval loop may give the GIL away between any two bytecodes (a thread whose wait for it
  timed out asks for it; under load the OS can stop us for longer than any switch interval), so
  the walk runs no bytecode at all: ``list()`` over ``itertools`` iterators that call the ctypes
  functions from C, with the cyclic GC paused; ``sys._current_frames()`` is taken in the same
  pass. Only an audit hook (``sys.addaudithook``) could run Python code in it. Around it,
  ``threading._active_limbo_lock`` is taken (no ``threading.Thread`` can finish meanwhile, so the
  target's state stays valid until ``_PyEval_SetTrace``) and ``sys.setswitchinterval`` is raised to
  at least 5 ms (restored after). A thread with no Python frame at that moment gets a
  ``ThreadStateError``.
* Costs: other threads pay nothing (the trace is per thread state). The traced thread pays a ctypes
  callback per line, call and return of every frame it runs, traced locally or not (about 7-11x on
  a tight loop with a trivial trace). Installing on another thread costs about 20-30 us, target
  idle or CPU-bound (measured on 3.10 and 3.11). Removal costs about 20-50 us (no walk: the
  thread state is remembered and the thread is pinned by the limbo lock).
* Limits: the trace occupies the target thread's single ``sys.settrace`` slot: a ``sys.settrace``
  call (a debugger, coverage) in that thread replaces it, ``set_trace`` replaces such a trace, and
  ``sys.gettrace()`` in the target returns an internal object while traced. Local traces live in
  ``frame.f_trace``.

If the running interpreter lacks what its backend needs, ``set_trace`` raises
:class:`~pymoult.errors.UnsupportedError` naming what is missing (``get_trace`` returns ``None``).
"""

import functools
import logging
import sys
import threading
import types

from pymoult import _cpython
from pymoult.errors import PymoultTypeError, ThreadStateError, UnsupportedError

__all__ = ["BACKEND", "set_trace", "get_trace", "trace_opcodes"]

_log = logging.getLogger("pymoult")

_GLOBALS = globals()
_get_ident = threading.get_ident
_getframe = sys._getframe

# One lock for every bookkeeping structure of this module. Reentrant: a trace function may call
# set_trace from inside a callback that already holds it.
_lock = threading.RLock()

# While a trace is being installed (the frames armed and, on 3.10/3.11, _PyEval_SetTrace called),
# keep other Python threads from being scheduled.
_CRITICAL_SWITCH_INTERVAL = 0.005

_unsupported = None  # why the backend cannot work here, or None

if hasattr(sys, "monitoring"):
    BACKEND = "monitoring"
elif sys.implementation.name == "cpython" and sys.version_info >= (3, 10):
    BACKEND = "ctypes"
else:  # pragma: no cover - not a supported interpreter
    BACKEND = "unsupported"
    _unsupported = "neither sys.monitoring (CPython 3.12+) nor CPython 3.10/3.11's _PyEval_SetTrace"


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _check_thread(thread):
    if not isinstance(thread, threading.Thread):
        raise PymoultTypeError(
            "set_trace/get_trace need a threading.Thread, not %r (%s)" % (thread, type(thread).__name__)
        )


def _check_alive(thread):
    if thread.ident is None or not thread.is_alive():
        state = "not started" if thread.ident is None else "finished"
        raise ThreadStateError("cannot trace thread %r: it is %s" % (thread.name, state) + " (%r)" % (thread,))


def _stack_of(ident):
    """The frames of thread *ident*, innermost first, leaving out this module's frames and anything
    running above them (a callback of ours and the user trace it is calling)."""
    frame = _cpython.current_frames().get(ident)
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    for i in range(len(frames) - 1, -1, -1):
        if frames[i].f_globals is _GLOBALS:
            return frames[i + 1 :]
    return frames


class _quiet_section:
    """Keep the other Python threads from running (raised switch interval) and, if *pin_threads*,
    keep every ``threading.Thread`` from finishing (its last act in Python takes this lock).
    A class rather than a ``contextlib`` generator: no foreign frame runs in here."""

    __slots__ = ("lock", "pinned", "old")

    def __init__(self, pin_threads):
        self.lock = getattr(threading, "_active_limbo_lock", None) if pin_threads else None
        self.pinned = False
        self.old = None

    def __enter__(self):
        # A timeout rather than a deadlock if, against all odds, the lock is held by a thread that
        # waits for us; without the pin the section is still protected by the switch interval.
        if self.lock is not None:
            self.pinned = self.lock.acquire(True, 1.0)
        self.old = sys.getswitchinterval()
        _cpython.set_switch_interval(max(self.old, _CRITICAL_SWITCH_INTERVAL))
        return self.pinned

    def __exit__(self, *exc):
        _cpython.set_switch_interval(self.old)
        if self.pinned:
            self.pinned = False
            self.lock.release()
        return False


def _called_by_us(frame):
    back = frame.f_back
    return back is not None and back.f_globals is _GLOBALS


def _log_trace_error(trace, thread, note=""):
    _log.error(
        "trace function %r raised in thread %r; its trace has been removed%s",
        trace,
        getattr(thread, "name", thread),
        note,
        exc_info=True,
    )


# ---------------------------------------------------------------------------------------------
# Backend "monitoring" (CPython 3.12+)

if BACKEND == "monitoring":
    _M = sys.monitoring
    _E = _M.events
    _DISABLE = _M.DISABLE
    _LOCAL_EVENTS = (
        _E.PY_START | _E.PY_RESUME | _E.PY_RETURN | _E.PY_YIELD | _E.CALL | _E.LINE | _E.JUMP
    )
    _GLOBAL_EVENTS = _E.RAISE | _E.PY_UNWIND | _E.PY_THROW
    _TOOL_IDS = (3, 4, 5)
    _TOOL_NAME = "pymoult"

    _tool = None  # the tool id we hold, while any thread is traced
    _states = {}  # ident -> _MState (read without the lock by the callbacks)
    _code_users = {}  # code object -> number of states that enabled local events on it
    _line_maps = {}  # code object -> {bytecode offset: line}, for JUMP events

    class _MState:
        """What we know about one traced thread."""

        __slots__ = ("thread", "ident", "trace", "locals", "codes", "bottom", "active", "opcodes",
                     "opcode_codes")

        def __init__(self, thread):
            self.thread = thread
            self.ident = thread.ident
            self.trace = None
            self.locals = {}  # frame -> local trace
            self.codes = set()  # code objects this state enabled
            self.bottom = None  # outermost frame at installation: its exit ends the trace
            self.active = True
            self.opcodes = set()  # frames that get an 'opcode' event per instruction
            self.opcode_codes = set()  # their code objects, with INSTRUCTION events enabled

        def enable(self, code):
            with _lock:
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

        def call_event(self, frame):
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

        def local_event(self, frame, local, event, arg):
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

        def fail(self, culprit):
            _log_trace_error(culprit, self.thread)
            with _lock:
                if _states.get(self.ident) is self:
                    _remove_state(self)

        def finish(self):
            with _lock:
                if _states.get(self.ident) is self:
                    _remove_state(self)

    def _build_line_map(code):
        lines = {}
        for start, end, line in code.co_lines():
            for offset in range(start, end, 2):
                lines[offset] = line
        _line_maps[code] = lines
        return lines

    def _callee_codes(obj, depth=0):
        """Code objects a CALL of *obj* may start (Python code only, not ours)."""
        t = type(obj)
        if t is types.FunctionType:
            return () if obj.__globals__ is _GLOBALS else (obj.__code__,)
        if depth > 3:
            return ()
        if t is types.MethodType:
            return _callee_codes(obj.__func__, depth + 1)
        if t is functools.partial:
            return _callee_codes(obj.func, depth + 1)
        try:
            if isinstance(obj, type):
                codes = []
                for name in ("__new__", "__init__"):
                    f = getattr(obj, name, None)
                    if type(f) is types.FunctionType and f.__globals__ is not _GLOBALS:
                        codes.append(f.__code__)
                return codes
            call = getattr(t, "__call__", None)
        except Exception:  # a metaclass with a strange __getattr__
            return ()
        if type(call) is types.FunctionType and call.__globals__ is not _GLOBALS:
            return (call.__code__,)
        return ()

    # -- callbacks: all of them run in whichever thread produced the event ---------------------

    def _on_start(code, offset):  # PY_START, PY_RESUME
        st = _states.get(_get_ident())
        if st is None:
            return None
        frame = _getframe(1)
        if frame.f_code is code and not _called_by_us(frame):
            st.call_event(frame)
        return None

    def _on_throw(code, offset, exc):  # PY_THROW (global)
        st = _states.get(_get_ident())
        if st is None:
            return None
        frame = _getframe(1)
        if frame.f_code is code:
            if code not in st.codes:
                st.enable(code)
            st.call_event(frame)
        return None

    def _on_call(code, offset, callable_, arg0):  # CALL
        st = _states.get(_get_ident())
        if st is None:
            return None
        codes = st.codes
        for c in _callee_codes(callable_):
            if c not in codes:
                st.enable(c)
        return None

    def _on_line(code, line):  # LINE (the hot path: local_event inlined)
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

    def _on_jump(code, offset, dest):  # JUMP
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

    def _on_return(code, offset, retval):  # PY_RETURN, PY_YIELD
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

    def _on_unwind(code, offset, exc):  # PY_UNWIND (global)
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

    def _on_raise(code, offset, exc):  # RAISE (global)
        st = _states.get(_get_ident())
        if st is None:
            return None
        frame = _getframe(1)
        local = st.locals.get(frame)
        if local is not None:
            st.local_event(frame, local, "exception", (type(exc), exc, exc.__traceback__))
        return None

    def _on_instruction(code, offset):  # INSTRUCTION (local, only while opcode frames exist)
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

    # -- tool id and bookkeeping (caller holds _lock) ----------------------------------------------

    def _acquire_tool():
        global _tool
        taken = []
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

    def _release_tool():
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

    def _remove_state(st):
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

    _opcode_users = {}  # code object -> number of states that want INSTRUCTION events on it

    def _drop_opcode_user(code):
        n = _opcode_users.get(code, 0) - 1
        if n > 0:
            _opcode_users[code] = n
            return
        _opcode_users.pop(code, None)
        if _tool is not None:
            _M.set_local_events(_tool, code, _LOCAL_EVENTS if code in _code_users else 0)

    def _trace_opcodes(thread, frames):
        st = _states.get(thread.ident)
        if st is None or st.thread is not thread or not st.active:
            return False
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
                _M.set_local_events(_tool, code, _LOCAL_EVENTS | _E.INSTRUCTION)
            _opcode_users[code] = n + 1
        return True

    def _prune():
        for st in list(_states.values()):
            if not st.thread.is_alive():
                _remove_state(st)

    def _install(thread, trace):
        ident = thread.ident
        st = _states.get(ident)
        if st is not None and st.thread is not thread:  # stale record of a thread with the same ident
            _remove_state(st)
            st = None
        if _tool is None:
            _acquire_tool()
        fresh = st is None
        if fresh:
            st = _MState(thread)
        with _quiet_section(pin_threads=False):
            stack = _stack_of(ident)
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
                new = [f for f in _stack_of(ident) if f not in seen]
                if not new:
                    break
                for frame in new:
                    seen.add(frame)
                    st.locals[frame] = trace
                    st.enable(frame.f_code)

    def _uninstall(thread):
        st = _states.get(thread.ident)
        if st is not None and st.thread is thread:
            _remove_state(st)

    def _current_trace(thread):
        st = _states.get(thread.ident)
        if st is not None and st.thread is thread and st.active:
            return st.trace
        return None

    def _traced_idents():
        """Idents of the threads that have a record here (for tests)."""
        return set(_states)


# ---------------------------------------------------------------------------------------------
# Backend "ctypes" (CPython 3.10, 3.11)

elif BACKEND == "ctypes":
    import ctypes
    from itertools import accumulate, chain, islice, repeat, takewhile, tee

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
    if _missing:  # pragma: no cover - not on the CPython builds we support
        _unsupported = "this Python does not export %s (needed on CPython %d.%d)" % (
            ", ".join(_missing),
            sys.version_info[0],
            sys.version_info[1],
        )
    else:
        _SetTrace = _api._PyEval_SetTrace
        _SetTrace.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        _SetTrace.restype = ctypes.c_int
        _InterpGet = _api.PyInterpreterState_Get
        _InterpGet.argtypes = ()
        _InterpGet.restype = ctypes.c_void_p
        _ThreadHead = _api.PyInterpreterState_ThreadHead
        _ThreadHead.argtypes = (ctypes.c_void_p,)
        _ThreadHead.restype = ctypes.c_void_p
        # PyThreadState_Next(tstate) as the function itertools.accumulate calls: (previous, element).
        # The element (always None, i.e. NULL) is an extra trailing argument, which the C function
        # never reads: harmless in the C calling conventions (the caller passes and removes it).
        _ThreadNextOf = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
            ctypes.cast(_api.PyThreadState_Next, ctypes.c_void_p).value
        )
        # A new reference, or NULL. Not restype=py_object: on a NULL result ctypes 3.10/3.11 calls
        # Py_DECREF(NULL) in GetResult and crashes (seen with threads starting or ending).
        _GetFrame = _api.PyThreadState_GetFrame
        _GetFrame.argtypes = (ctypes.c_void_p,)
        _GetFrame.restype = ctypes.c_void_p
        _DecRef = _api.Py_DecRef
        _DecRef.argtypes = (ctypes.c_void_p,)
        _DecRef.restype = None
        _TstateGet = _api.PyThreadState_Get
        _TstateGet.argtypes = ()
        _TstateGet.restype = ctypes.c_void_p

    _PY_object = ctypes.py_object
    _cast = ctypes.cast
    _NONE_ADDR = id(None)
    # PyTrace_CALL, EXCEPTION, LINE, RETURN, C_CALL, C_EXCEPTION, C_RETURN, OPCODE
    _EVENT_NAMES = ("call", "exception", "line", "return", "c_call", "c_exception", "c_return", "opcode")

    _states = {}  # ident -> _CState

    class _CState:
        """One traced thread; it is also the ``PyObject *obj`` given to ``_PyEval_SetTrace``, so the
        trampoline receives it directly and a stale one is recognised."""

        __slots__ = ("thread", "ident", "trace", "tstate", "bottom", "active", "installed")

        def __init__(self, thread, trace):
            self.thread = thread
            self.ident = thread.ident
            self.trace = trace
            self.tstate = None
            self.bottom = None
            self.active = True
            self.installed = False

        def __repr__(self):
            return "<pymoult thread trace of %r: %r>" % (self.thread.name, self.trace)

        def stop_here(self):
            """Uninstall from inside the target thread (error in the trace, thread ending)."""
            with _lock:
                self.active = False
                if _states.get(self.ident) is self:
                    del _states[self.ident]
                if self.installed:
                    self.installed = False
                    sys.settrace(None)  # this thread's slot holds us: clear it
                    for frame in _stack_of(self.ident):
                        frame.f_trace = None

    def _trampoline(state, frame, what, arg):
        """Emulates CPython's trace_trampoline (Python/sysmodule.c); always returns 0."""
        try:
            if not state.active:
                if state.installed:
                    state.stop_here()
                return 0
            if what == 0:  # call
                if frame.f_globals is _GLOBALS or _called_by_us(frame):
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
                _log_trace_error(callback, state.thread)
                if state.active and state.installed:
                    state.stop_here()
                return 0
            except BaseException:
                _log_trace_error(
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
            _log.error("pymoult: error in the thread trace trampoline (dropped)", exc_info=True)
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

    def _snapshot(interp):
        """[sys._current_frames(), (tstate, new reference to its top frame or None), ...] of every
        thread state of *interp*, all read without this thread letting go of the GIL."""
        walk = takewhile(bool, accumulate(chain(map(_ThreadHead, (interp,)), repeat(None)), _ThreadNextOf))
        tstates, again = tee(walk)
        # sys._current_frames() itself, not _cpython.current_frames(): the caller pauses the
        # collector (so it is safe on 3.11 too), and that function's lock could make us wait.
        return list(chain(islice(iter(sys._current_frames, _NO_DICT), 1), zip(tstates, map(_GetFrame, again))))

    def _find_tstate(ident):
        """(tstate pointer, top frame) of thread *ident*, or (None, frame or None).
        Called with the target pinned if possible; the pointer is valid while it is pinned."""
        with _cpython.pause_gc():
            snapshot = _snapshot(_InterpGet())
        frames, pairs = snapshot[0], snapshot[1:]
        top = frames.get(ident)
        target = id(top) if top is not None else None
        found = None
        for tstate, frame in pairs:
            if frame:
                if frame == target:  # a frame runs in one thread only
                    found = tstate
                _DecRef(frame)  # the dict of the same instant holds it too
        return found, top

    def _is_pinned(thread, pinned):
        """Whether *thread* cannot finish while we hold the limbo lock."""
        active = getattr(threading, "_active", None)
        return (
            pinned
            and active is not None
            and active.get(thread.ident) is thread
            and not isinstance(thread, threading._DummyThread)
        )

    def _prune():
        for st in list(_states.values()):
            if not st.thread.is_alive():
                # Its thread state is gone (or going): it dropped our object; never touch it.
                st.active = False
                del _states[st.ident]

    def _install(thread, trace):
        ident = thread.ident
        old = _states.get(ident)
        if old is not None and old.thread is thread and old.active and old.installed:
            old.trace = trace  # same slot: re-arm the frames of its stack with the new trace
            with _quiet_section(pin_threads=False):
                for frame in _stack_of(ident):
                    frame.f_trace = trace
            return
        if old is not None:
            old.active = False
            del _states[ident]
        st = _CState(thread, trace)
        if ident == _get_ident():
            stack = _stack_of(ident)
            for frame in stack:
                frame.f_trace = trace
            st.bottom = stack[-1] if stack and stack[-1].f_back is None else None
            st.tstate = _TstateGet()
            _states[ident] = st
            st.installed = True
            if _SetTrace(st.tstate, _TRAMPOLINE_ADDR, id(st)) != 0:  # pragma: no cover
                raise ThreadStateError("_PyEval_SetTrace failed for thread %r" % (thread.name,))
            return  # nothing more: any Python call now would be traced
        with _quiet_section(pin_threads=True) as pinned:
            active = getattr(threading, "_active", None)
            if not thread.is_alive() or (pinned and active is not None and active.get(ident) is not thread):
                raise ThreadStateError("cannot trace thread %r: it is finishing (%r)" % (thread.name, thread))
            tstate, _top = _find_tstate(ident)
            if tstate is None:
                raise ThreadStateError(
                    "cannot trace thread %r: no thread state with a running Python frame found "
                    "for it (%r)" % (thread.name, thread)
                )
            stack = _stack_of(ident)
            for frame in stack:
                frame.f_trace = trace
            st.bottom = stack[-1] if stack and stack[-1].f_back is None else None
            st.tstate = tstate
            _states[ident] = st
            st.installed = True
            try:
                rc = _SetTrace(tstate, _TRAMPOLINE_ADDR, id(st))
            except BaseException:  # an audit hook refused it
                st.installed = False
                del _states[ident]
                for frame in stack:
                    frame.f_trace = None
                raise
            if rc != 0:  # pragma: no cover
                raise ThreadStateError("_PyEval_SetTrace failed for thread %r" % (thread.name,))

    def _uninstall(thread):
        ident = thread.ident
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
            for frame in _stack_of(ident):
                frame.f_trace = None
            return
        with _quiet_section(pin_threads=True) as pinned:
            if _is_pinned(thread, pinned):
                st.installed = False
                _SetTrace(st.tstate, None, None)
                for frame in _stack_of(ident):
                    frame.f_trace = None
            # else: the thread is finishing (or is a foreign thread whose state we cannot pin):
            # the trampoline sees the record inactive and clears the slot at its next event, and
            # the thread state drops our object when the thread ends.

    def _current_trace(thread):
        st = _states.get(thread.ident)
        if st is not None and st.thread is thread and st.active:
            return st.trace
        return None

    def _trace_opcodes(thread, frames):
        st = _states.get(thread.ident)
        if st is None or st.thread is not thread or not st.active or not st.installed:
            return False
        for frame in frames:
            if frame.f_trace is None:
                frame.f_trace = st.trace
            frame.f_trace_opcodes = True  # CPython then reports each instruction of the frame
        return True

    def _traced_idents():
        """Idents of the threads that have a record here (for tests)."""
        return set(_states)

else:  # pragma: no cover

    def _trace_opcodes(thread, frames):
        return False

    def _prune():
        pass

    def _current_trace(thread):
        return None

    def _traced_idents():
        return set()


# ---------------------------------------------------------------------------------------------
# Public interface


def set_trace(thread, trace):
    """Give *thread* the trace function *trace* (``None`` removes it), effective at that thread's
    next Python event, without the thread calling anything.

    *trace* is called in *thread* as ``trace(frame, event, arg)`` with ``sys.settrace`` semantics
    (see the module docstring): ``'call'`` for frames started from now on (the result is the frame's
    local trace), while every frame already on the thread's stack gets *trace* as its local trace, so
    its next ``'line'`` event reaches *trace* at once. A trace already installed is replaced.

    An ``Exception`` raised by the trace is logged on ``logging.getLogger("pymoult")`` with its
    traceback and the trace is removed for that thread, which carries on unharmed.

    Raises :class:`~pymoult.errors.PymoultTypeError` if *thread* is not a ``threading.Thread`` or
    *trace* is neither callable nor ``None``; :class:`~pymoult.errors.ThreadStateError` if *thread*
    is not started, has finished, or has no Python frame to trace right now (installing only:
    removing the trace of a finished thread is a no-op); :class:`~pymoult.errors.UnsupportedError` if
    this interpreter lacks what the backend needs (or, on 3.12+, if no ``sys.monitoring`` tool id is
    free). Thread-safe; callable from any thread, the target itself and trace functions included.
    """
    _check_thread(thread)
    if trace is not None and not callable(trace):
        raise PymoultTypeError("trace must be callable or None, not %r (%s)" % (trace, type(trace).__name__))
    if trace is None:
        if _unsupported is not None:
            return
        with _lock:
            if thread.ident is not None:
                _uninstall(thread)
            _prune()
        return
    if _unsupported is not None:
        raise UnsupportedError("cannot trace another thread: %s" % (_unsupported,))
    _check_alive(thread)
    with _lock:
        _prune()
        _install(thread, trace)


def get_trace(thread):
    """The trace function installed on *thread* by :func:`set_trace`, or ``None`` (none installed,
    removed after an error in it, or the thread has ended). Raises
    :class:`~pymoult.errors.PymoultTypeError` if *thread* is not a ``threading.Thread``."""
    _check_thread(thread)
    if thread.ident is None:
        return None
    with _lock:
        _prune()
        return _current_trace(thread)


def trace_opcodes(thread, frames):
    """Also report an ``'opcode'`` event, to the frame's local trace, before every instruction
    that *frames* (frames of *thread*'s stack) run from now on, until the trace is removed: a
    thread blocked in a C call, or waiting for the GIL in the middle of a line, then meets its
    trace before it runs one more instruction of those frames, not only at its next line.

    Returns False (and does nothing) if *thread* has no trace installed by :func:`set_trace`.
    On the ctypes backend it sets ``frame.f_trace_opcodes``; on the monitoring backend it enables
    ``INSTRUCTION`` events on the frames' code objects, which costs every thread running that code
    a callback per instruction until the trace is removed: keep it short.
    """
    _check_thread(thread)
    if _unsupported is not None or thread.ident is None:
        return False
    with _lock:
        return _trace_opcodes(thread, list(frames))
