"""Access to CPython internals that differ between versions, kept in one place.

- :func:`raise_in_thread` delivers an exception class asynchronously to another thread with
  ``PyThreadState_SetAsyncExc`` (stable signature on 3.7-3.13). The thread id must be passed as
  ``unsigned long``: with ctypes' default int conversion a large id is truncated and the call
  silently returns 0. The exception must be a *class*: an instance gives ``SystemError`` in the
  target. Delivery happens at the target's next bytecode boundary, but only *after* a blocking call
  (``sleep``, ``Event.wait``, ``recv``, a lock wait) has returned, and it may land inside a
  ``finally`` block or clean-up code.

- :func:`take_gil_afresh` returns once *another* thread has held the GIL since the call. CPython
  counts a GIL switch only when a different thread takes the GIL (``gil->switch_number``), and a
  thread waiting for the GIL asks the holder to drop it only if its wait timed out with no switch
  since the wait began. So after a fresh acquisition, every wait begun before is void, and the
  holder keeps the GIL until a wait begun afterwards times out: at least one switch interval,
  as long as it runs pure Python. ``time.sleep(0)`` is not enough: when no waiter wakes in time,
  the same thread takes the GIL back and no switch is counted. A helper thread, started on first
  use and blocked on a lock ever after, is the other thread.

- :func:`write_frame_local` sets a local variable of a live frame, in any thread. On 3.13
  (PEP 667) ``frame.f_locals`` is a write-through proxy. Before, ``f_locals`` is a snapshot dict:
  write it, then ``PyFrame_LocalsToFast(frame, 0)`` copies it back into the frame (without it
  the write is lost). That copies *every* local back, so the snapshot and the copy must not be
  separated by a GIL switch (callers hold a stop-the-world window). Cell variables update too.

- :func:`current_frames` is ``sys._current_frames()`` made safe on 3.11, where it can deadlock the
  whole process (CPython gh-106883, unfixed in 3.11.7). It holds the runtime's thread-list lock
  (``HEAD_LOCK``) while it creates frame objects for the other threads' top frames (3.11 makes them
  lazily); that allocation can start a cyclic collection, whose finalizers and ``gc.callbacks`` run
  Python code and so may give the GIL away, still holding the lock. A thread that then takes the GIL
  and starts or ends a thread (``_PyThreadState_Prealloc``, ``tstate_delete_common``) blocks on the
  lock while holding the GIL: no Python code runs again, not even a signal handler or a watchdog
  thread (only ``faulthandler``'s C watchdog still can). :func:`current_frames` pauses the
  collector for the call.
  3.10 (frames are already objects) and 3.12+ (collections run only at the eval breaker, after the
  call) never collect inside it, so there it is ``sys._current_frames`` itself. Library code calls
  :func:`current_frames`, never ``sys._current_frames`` directly.

- :func:`pause_gc` keeps the cyclic collector from starting on its own inside a ``with`` block
  (explicit ``gc.collect()`` still works). Nestable and thread-safe: when the last pause of any
  thread ends, the collector is put back as it was when the first began, enabled or not,
  whatever the code inside did to it. Code that calls ``gc.enable()`` meanwhile defeats the
  pause until then.

- :func:`unshare_instance_dict` gives an object whose ``__class__`` was assigned an ordinary dict
  again, so that its attribute reads are specialised. On 3.11+ a plain instance keeps its attributes
  as *inline values* laid out by its class's shared keys, and ``obj.a`` runs as
  ``LOAD_ATTR_INSTANCE_VALUE``. Assigning ``__class__`` first turns those values into a *split* dict
  (the class's shared keys, the values in a separate array), and that dict defeats the specialiser
  for the rest of the object's life: 3.11 and 3.12 specialise ``LOAD_ATTR_WITH_HINT``, which reads
  the value from the key entry, finds it empty (a split dict keeps values apart) and deoptimises on
  every execution, respecialising and failing again; 3.13 refuses to specialise (a split dict).
  Reads cost 3.2-4x a plain object's. A copy, ``dict(d)``, is a combined dict:
  ``LOAD_ATTR_WITH_HINT`` then works, 1.0-1.05x a plain object on 3.12 and 3.13, about 1.3x on 3.11
  (whose with-hint path does more work); the inline values themselves cannot be restored from
  Python. The copy replaces the dict only when nobody else holds it (its reference count says so): a
  ``vars(obj)`` kept elsewhere must go on seeing the object's attributes. 3.10 has no inline values:
  nothing to do.

- :data:`ATTRIBUTES_INLINE`: from 3.11 an instance of an ordinary class keeps its attributes inline
  (no dict object) until something reads its ``__dict__``. On 3.11 and 3.12 that read makes a dict
  for the rest of the object's life and its attribute reads cost about 3x as much after
  (:data:`READING_DICT_SLOWS`); 3.13 keeps the values inline. ``gc.get_referents(obj)`` of an
  object with inline values gives its attribute values then its class; of an object with a dict
  (always on 3.10), the dict then the class. So, without reading ``__dict__``, the number of
  attributes an object holds is ``len(gc.get_referents(obj)) - 1`` when no dict is among them.

- :func:`dict_version` reads a dict's version tag (PEP 509, ``ma_version_tag``): 3.6-3.13 give
  a dict a new tag, from a counter that never goes back, at every change of its contents (an
  item added, rebound to another object, deleted; ``clear``, ``update``, ``pop``...), so an
  unchanged tag proves that the dict was not changed since the tag was read, in O(1) instead of
  comparing its items. From 3.12 the tag's low bits also count dict watchers (watching a dict
  changes its tag): a false "changed", never a false "unchanged". The field follows the object
  header and ``ma_used`` in every build of those versions. PEP 509 is deprecated since 3.12 and
  later versions keep no versions: there, and wherever a self-test at import fails (it changes a
  dict in each way and reads the tag each time: a change that leaves it as it was, or a read
  without a change that does not, fails it), :func:`dict_version` gives None and callers
  compare the items.

- :func:`take_statement_annotations` and :func:`unread_annotations`: a module-level annotated
  statement (``NAME: str``, ``NAME: str = 'x'``) compiled and run on its own, as
  ``ModuleUpdate`` runs a new statement, adds to the module's annotations up to 3.13: it stores
  into the namespace's ``__annotations__`` dict, made by the code if absent. From 3.14 (PEP
  649/749), without ``from __future__ import annotations``, the code instead binds
  ``__annotate__`` (a function evaluating only that statement's annotations) and, for one
  inside an ``if`` or ``try``, ``__conditional_annotations__`` (which of them ran) in the
  namespace: in a module's dict, that replaces the module's own ``__annotate__``, so its
  annotations, unless already read (``module.__annotations__`` caches them in the dict as
  ``__annotations__``, which later reads return), become the statement's alone. Callers take those
  two bindings out of what the statement bound (:func:`take_statement_annotations` gives a
  function evaluating the statement's annotations, or None up to 3.13), and merge the result into
  the annotations as they stand; :func:`unread_annotations` evaluates a module's annotations
  from its ``__annotate__`` without caching them in its dict (3.14; ``{}`` before, where a
  module's annotations are always the ``__annotations__`` of its dict).

Per-thread tracing, the other version-specific mechanism, lives in ``_thread_trace``.
"""

from __future__ import annotations

import _thread
import ctypes
import gc
import os
import sys
import threading
from collections.abc import Callable
from types import FrameType, FunctionType
from typing import Any, Literal

from .errors import PymoultTypeError, ThreadStateError

PY_VERSION = sys.version_info[:2]

#: Instances keep their attributes inline until their ``__dict__`` is read (see module notes).
ATTRIBUTES_INLINE = PY_VERSION >= (3, 11)
#: Reading an inline instance's ``__dict__`` slows its attribute reads for life (3.11, 3.12).
READING_DICT_SLOWS = (3, 11) <= PY_VERSION < (3, 13)

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


if PY_VERSION >= (3, 13):

    def write_frame_local(frame: FrameType, name: str, value: object) -> None:
        """Set local ``name`` of ``frame`` to ``value`` (PEP 667 write-through)."""
        frame.f_locals[name] = value

else:
    _locals_to_fast = ctypes.pythonapi.PyFrame_LocalsToFast
    _locals_to_fast.argtypes = (ctypes.py_object, ctypes.c_int)
    _locals_to_fast.restype = None

    def write_frame_local(frame: FrameType, name: str, value: object) -> None:
        """Set local ``name`` of ``frame`` to ``value`` (snapshot, then copy back)."""
        frame.f_locals[name] = value
        _locals_to_fast(frame, 0)


class _GcPauses:
    """How many ``pause_gc`` blocks are open, in every thread, and what to restore after the
    last."""

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()  # held only around the counter: never while waiting
        self.count = 0
        self.resume = False

    def enter(self) -> None:
        with self.lock:
            if self.count == 0:
                self.resume = gc.isenabled()
                gc.disable()
            self.count += 1

    def exit(self) -> None:
        with self.lock:
            self.count -= 1
            if self.count == 0:  # as it was, whatever the code inside did to it
                (gc.enable if self.resume else gc.disable)()


_gc_pauses = _GcPauses()


class pause_gc:
    """``with pause_gc():`` no automatic cyclic collection starts inside the block (see module
    notes).

    A class rather than a ``contextlib`` generator: no foreign frame runs in here.
    """

    __slots__ = ()

    def __enter__(self) -> pause_gc:
        _gc_pauses.enter()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        _gc_pauses.exit()
        return False


if PY_VERSION == (3, 11):

    def current_frames() -> dict[int, FrameType]:
        """``sys._current_frames()`` with the cyclic collector paused (3.11: see module notes).
        The calling thread's entry is the caller's frame, as if it had called
        ``sys._current_frames``."""
        with pause_gc():
            frames = sys._current_frames()
        frames[_thread.get_ident()] = sys._getframe(1)
        return frames

else:
    current_frames = sys._current_frames


if PY_VERSION >= (3, 11):
    # Py_TPFLAGS_MANAGED_DICT: the instance dict (or inline values) lives before the object
    _MANAGED_DICT = 1 << 4

    def unshare_instance_dict(obj: object) -> bool:
        """Give ``obj`` a combined copy of its instance dict (see module notes); True if it did.

        Call it after assigning ``obj.__class__``. Objects without a managed dict (slots only,
        builtin subclasses) and dicts that something else holds are left alone.
        """
        if not type(obj).__flags__ & _MANAGED_DICT:
            return False
        try:
            state = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            return False
        # 3 references: the object's, ``state`` and getrefcount's argument; more: held elsewhere
        if type(state) is not dict or sys.getrefcount(state) > 3:
            return False
        object.__setattr__(obj, "__dict__", dict(state))
        return True

else:

    def unshare_instance_dict(obj: object) -> bool:
        """Nothing to do before 3.11 (no inline values, no split instance dicts): False."""
        return False


def set_switch_interval(seconds: float) -> None:
    """``sys.setswitchinterval`` that gives back exactly what ``getswitchinterval`` returned.

    CPython stores the interval as whole microseconds, truncating ``seconds * 1e6``: 0.0002
    becomes 199 us and reads back as 0.000199, so saving and restoring loses a microsecond
    each time. Nudging by half a microsecond makes the truncation land on the intended value.
    """
    sys.setswitchinterval(seconds + 5e-7)


def clear_async_exc(ident: int) -> None:
    """Withdraw an asynchronous exception not yet raised in thread ``ident`` (no-op if none)."""
    _set_async_exc(ident, ctypes.py_object())  # NULL clears it


def raise_in_thread(thread: threading.Thread, exc_class: type[BaseException]) -> None:
    """Make ``exc_class`` be raised in ``thread`` at its next bytecode boundary.

    Raises ``ThreadStateError`` if the thread is not running (the call found no such thread).
    """
    if not (isinstance(exc_class, type) and issubclass(exc_class, BaseException)):
        raise PymoultTypeError(f"an exception class is required, got {exc_class!r}")
    ident = thread.ident
    if ident is None or not thread.is_alive():
        raise ThreadStateError(f"cannot raise {exc_class.__name__} in {thread!r}: "
                               "it is not running")
    found = _set_async_exc(ident, exc_class)
    if found == 0:
        raise ThreadStateError(f"cannot raise {exc_class.__name__} in {thread!r}: "
                               "no such thread state")
    if found > 1:  # cannot happen per CPython's contract; undo as its documentation asks
        clear_async_exc(ident)
        raise ThreadStateError(f"thread id {ident} matched {found} thread states; nothing raised")


class _GilSwitcher:
    """A thread that exists only to take the GIL when asked (see :func:`take_gil_afresh`)."""

    def __init__(self) -> None:
        self.started = False
        self.go = _thread.allocate_lock()
        self.done = _thread.allocate_lock()
        self.go.acquire()
        self.done.acquire()

    def _main(self) -> None:
        go, done = self.go, self.done
        while True:
            go.acquire()
            done.release()

    def switch(self, timeout: float) -> bool:
        if not self.started:
            # _thread, not threading: no Thread object, never joined at exit, never ends
            _thread.start_new_thread(self._main, ())
            self.started = True
        self.done.acquire(False)  # a stale release left by an earlier timed-out call
        try:
            self.go.release()
        except RuntimeError:  # still released from an earlier timed-out call
            pass
        return self.done.acquire(True, timeout)


_switcher = _GilSwitcher()


def _reset_after_fork() -> None:
    global _switcher, _gc_pauses
    _switcher = _GilSwitcher()  # the child has no helper thread
    # Pauses open in other threads at the fork never end in the child (those threads are gone);
    # the forking thread is in none: no pause of ours spans code that could fork.
    resume = _gc_pauses.resume and _gc_pauses.count > 0
    _gc_pauses = _GcPauses()
    if resume:
        gc.enable()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


#: Where a dict's version tag sits: after the object header and ``ma_used`` (a Py_ssize_t).
_DICT_VERSION_OFFSET = object.__basicsize__ + ctypes.sizeof(ctypes.c_ssize_t)
_DICT_USED_OFFSET = object.__basicsize__


def _read_dict_version(mapping: dict[Any, Any]) -> int:
    return ctypes.c_uint64.from_address(id(mapping) + _DICT_VERSION_OFFSET).value


def _dict_versions_work() -> bool:
    """Whether :func:`_read_dict_version` reads a tag that every change of a dict replaces by
    one never seen before, and that stays while the dict is left alone (see module notes)."""
    if PY_VERSION >= (3, 14):
        return False
    probe: dict[str, object] = {}
    other: dict[str, object] = {}
    used = ctypes.c_ssize_t.from_address(id(probe) + _DICT_USED_OFFSET)
    if used.value != 0:
        return False
    seen = [_read_dict_version(probe)]
    changes = (lambda: probe.__setitem__("a", 1), lambda: probe.__setitem__("a", 2),
               lambda: probe.update(b=3), lambda: probe.setdefault("c", 4),
               lambda: probe.__delitem__("a"), lambda: probe.pop("b"), probe.popitem,
               lambda: exec("d = 5", probe), probe.clear,
               lambda: other.__setitem__("x", 1))
    for change in changes:
        change()
        if len(probe) != used.value:  # not the layout expected
            return False
        version = _read_dict_version(probe if change is not changes[-1] else other)
        if version in seen or version < max(seen):
            return False
        seen.append(version)
    return _read_dict_version(probe) == seen[-2] and _read_dict_version(other) == seen[-1]


if _dict_versions_work():

    def dict_version(mapping: dict[Any, Any]) -> int | None:
        """The version tag of the dict ``mapping`` (see module notes): while it reads the same,
        the dict's items (keys, and the objects bound to them) have not changed."""
        if not isinstance(mapping, dict):
            raise PymoultTypeError(f"expected a dict, got {type(mapping).__name__}")
        return _read_dict_version(mapping)

else:

    def dict_version(mapping: dict[Any, Any]) -> int | None:
        """None: this interpreter keeps no dict versions (see module notes)."""
        if not isinstance(mapping, dict):
            raise PymoultTypeError(f"expected a dict, got {type(mapping).__name__}")
        return None


def take_gil_afresh(timeout: float = 5.0) -> bool:
    """Block until another thread has held the GIL, then return holding it (see module notes).

    Returns False if the helper thread did not run within ``timeout`` seconds.
    """
    return _switcher.switch(timeout)


#: ``annotationlib.Format.VALUE``: the values the annotations evaluate to
_VALUE = 1

if PY_VERSION >= (3, 14):

    def take_statement_annotations(
            bound: dict[str, Any]) -> Callable[[], dict[str, Any]] | None:
        """Remove from ``bound`` (what one statement run alone in a module's dict bound: name
        -> value) the ``__annotate__`` and ``__conditional_annotations__`` it bound for its
        annotations (see module notes); return a function evaluating them, or None if it
        bound none. Evaluate them once the statements after it have run, as a read of a fresh
        module's annotations would (one may name a class defined below)."""
        annotate = bound.pop("__annotate__", None)
        conditional = bound.pop("__conditional_annotations__", None)
        if not callable(annotate):
            return None

        def evaluate() -> dict[str, Any]:
            function = annotate
            if conditional is not None and isinstance(annotate, FunctionType):
                # the code reads which annotations ran from its globals: the statement's set
                scope = dict(annotate.__globals__)
                scope["__conditional_annotations__"] = conditional
                function = FunctionType(annotate.__code__, scope, annotate.__name__,
                                        annotate.__defaults__, annotate.__closure__)
            return dict(function(_VALUE))

        return evaluate

    def unread_annotations(namespace: dict[str, Any]) -> dict[str, Any]:
        """The annotations of the module whose dict is ``namespace`` and whose annotations are
        not in it (not read yet): its ``__annotate__``'s, evaluated now, not cached."""
        annotate = namespace.get("__annotate__")
        return dict(annotate(_VALUE)) if callable(annotate) else {}

else:

    def take_statement_annotations(
            bound: dict[str, Any]) -> Callable[[], dict[str, Any]] | None:
        """None: up to 3.13 a statement's annotations go into ``__annotations__`` itself."""
        return None

    def unread_annotations(namespace: dict[str, Any]) -> dict[str, Any]:
        """``{}``: up to 3.13 a module's annotations are always in its dict."""
        return {}
