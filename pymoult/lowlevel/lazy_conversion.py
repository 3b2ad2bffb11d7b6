"""Lazy conversion: each object is transformed on its first access after the update.

Mechanism
---------
At the start, every instance of the class is moved to a *pending* subclass made for this update.
The pending class alone carries hooks: ``__getattribute__``, ``__setattr__``, ``__delattr__``,
and a wrapper for every special method the class has (so ``len(obj)``, ``obj == x``,
``str(obj)``... convert too). The first touch of a pending object, in any thread, takes the
conversion lock, runs the transformer on it (its own accesses bypass the hooks), and moves it
back to the live class. So:

- each object is transformed exactly once, even when several threads touch it at once (the others
  wait for the lock and find it converted);
- no thread ever sees an object half-transformed: it stays pending until the transformer is done;
- converted objects and new instances belong to the live class and meet no hook at all; once the
  last pending object is converted (or the conversion is undone), the conversion lets go of the
  pending class: the live class was never changed, and no hook remains anywhere.

What a conversion leaves on the object: moving it to the pending class assigns ``__class__``, and
on CPython 3.11+ that turns its inline attribute values into a *split* dict which the interpreter's
specialiser cannot use (reads cost 3-4x a plain object's for the rest of its life). So an object
leaving the pending state, converted or not, gets an ordinary copy of its dict
(``_cpython.unshare_instance_dict``): its reads then cost 1.0-1.05x a plain object's on 3.12 and
3.13, about 1.3x on 3.11, where the inline values a never-moved object keeps are faster still and
cannot be rebuilt from Python (``benchmarks/bench_data.py``). Where that matters and the pause
allows, an eager update of a class updated in place leaves objects as they were.

Rules for transformers: conversions take one lock (per update) for the transformer's duration,
so a transformer must not block on another thread or take an application lock that a thread
touching a pending object may hold (that would deadlock), and two lazy updates whose transformers
touch each other's objects from two threads can deadlock the same way. Building the pending
subclass runs the class's ``__init_subclass__`` once (a registry keyed on subclasses sees it).
Without a journal, nothing is kept once an object is converted; with one, each object's previous
state is kept for rollback.

While pending, ``type(obj)`` is the pending class (``isinstance`` and ``obj.__class__`` give the
live class). A transformer that raises leaves the object pending and its changes undone, logs the
error, and raises ``TransformerError`` in the thread that touched it; the next touch retries. A
``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``, an
exception raised asynchronously in the thread) undoes the changes the same way and is re-raised
as it is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .. import _cpython
from ..errors import PymoultTypeError, ThreadStateError, TransformerError
from .instances import instances_of
from .journal import Journal, Operation, current_journal, describe
from .object_conversion import AttributeWrites, snapshot_entry

__all__ = ["startLazyUpdate", "LazyConversion"]

logger = logging.getLogger("pymoult")

T = TypeVar("T")

_open_lock = threading.Lock()
_open: dict[type, LazyConversion] = {}  # class -> its lazy conversion still converting

# special methods that must not be wrapped (the hooks themselves, construction, class plumbing)
_NOT_WRAPPED = {
    "__getattribute__", "__getattr__", "__setattr__", "__delattr__", "__class__", "__new__",
    "__init__", "__init_subclass__", "__subclasshook__", "__dict__", "__weakref__", "__module__",
    "__doc__", "__slots__", "__qualname__", "__class_getitem__", "__set_name__", "__del__",
}


class LazyConversion(Operation):
    """A lazy conversion of the instances of a class: the pending objects, the conversions done,
    and undo (the pending ones go back unconverted, the converted ones are restored)."""

    def __init__(self, cls: type, transformer: Callable[[Any], object] | None,
                 on_convert: Callable[[Any], object] | None = None,
                 on_done: Callable[[], object] | None = None, keep_history: bool = True) -> None:
        self.cls = cls
        self.transformer = transformer
        self.on_convert = on_convert
        self.on_done = on_done
        self.keep_history = keep_history  # without a journal, converted objects are not kept
        self.lock = threading.RLock()
        self.pending_count = 0
        self.converted = 0
        self.writes = AttributeWrites(f"lazy conversion of {describe(cls)}")
        #: thread ident -> set of ids of objects it is transforming
        self.converting: dict[int, set[int]] = {}
        self.pending_cls: type | None = None  # the hooked class while objects are pending
        self.done = threading.Event()
        self.stopped = False

    @property
    def text(self) -> str:  # type: ignore[override]  # counts change as objects convert
        return (f"lazy conversion of {describe(self.cls)} ({self.converted} converted, "
                f"{self.pending_count} pending)")

    def undo(self) -> None:
        with self.lock:
            self.stopped = True
            pending_cls = self.pending_cls
            if pending_cls is not None:
                pending: list[Any] = instances_of(pending_cls, subclasses=False)
                for obj in pending:
                    _leave_pending(obj, self.cls)
            self.writes.undo()
            self.pending_count = 0
            self._finish()

    def _finish(self) -> None:
        self.pending_cls = None  # no object is pending: the class and its hooks can go
        with _open_lock:
            if _open.get(self.cls) is self:
                del _open[self.cls]
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def convert(self, obj: object) -> None:
        """Transform ``obj`` (a pending object) now, in the calling thread."""
        me = threading.get_ident()
        with self.lock:
            pending_cls = self.pending_cls
            if pending_cls is None or type(obj) is not pending_cls:
                return  # converted meanwhile by another thread
            if self.stopped:  # the update was undone: back to the live class, unconverted
                _leave_pending(obj, self.cls)
                return
            mine = self.converting.setdefault(me, set())
            if id(obj) in mine:
                return  # the transformer touching its own object
            mine.add(id(obj))
            mark = len(self.writes.entries)
            try:
                # the class swap already made its dict: a copy is cheap, and it also covers
                # transformers that write with object.__setattr__ (frozen dataclasses)
                self.writes.entries.append(snapshot_entry(obj))
                if self.transformer is not None:
                    self.transformer(obj)
            except BaseException as exc:
                # whatever was raised (KeyboardInterrupt, an asynchronous exception too), the
                # object goes back exactly as it was, still pending
                self._undo_partial(obj, mark)
                if not isinstance(exc, Exception):
                    logger.warning("lazy conversion of a %s interrupted by %r: the object stays "
                                   "pending", describe(self.cls), exc)
                    raise
                logger.exception("lazy conversion of a %s failed", describe(self.cls))
                raise TransformerError(
                    f"transformer {describe(self.transformer)} raised {exc!r} converting a "
                    f"{describe(self.cls)} on its first access", obj=obj) from exc
            finally:
                mine.discard(id(obj))
            _leave_pending(obj, self.cls)
            if not self.keep_history:
                self.writes.entries[mark:] = [e for e in self.writes.entries[mark:]
                                              if e[0] is not obj]
            self.converted += 1
            self.pending_count -= 1
            if self.on_convert is not None:
                self.on_convert(obj)
            if self.pending_count <= 0:
                self._finish()

    def _undo_partial(self, obj: object, mark: int) -> None:
        """Undo what converting ``obj`` wrote since entry ``mark``: ``obj``'s changes only (the
        objects its transformer touched were converted completely and stay so)."""
        entries = self.writes.entries
        ours = [e for e in entries[mark:] if e[0] is obj]
        entries[mark:] = [e for e in entries[mark:] if e[0] is not obj]
        partial = AttributeWrites("failed transformer")
        partial.entries = ours
        partial.undo()

    def forget(self) -> None:
        """A pending object died untouched: one fewer to wait for."""
        with self.lock:
            self.pending_count -= 1
            if self.pending_count <= 0 and not self.done.is_set():
                self._finish()

    def bypass(self, obj: object) -> bool:
        """True when the calling thread is transforming ``obj`` (its accesses go straight)."""
        mine = self.converting.get(threading.get_ident())
        return mine is not None and id(obj) in mine


def _leave_pending(obj: object, cls: type) -> None:
    """Move ``obj`` back to the live class ``cls``, with a dict its reads are fast on."""
    object.__setattr__(obj, "__class__", cls)
    _cpython.unshare_instance_dict(obj)


def _make_pending_class(cls: type, conversion: LazyConversion) -> type:
    def __getattribute__(self: Any, name: str) -> Any:
        if not conversion.bypass(self):
            conversion.convert(self)
            return getattr(self, name)  # now an instance of the live class: no hook
        return object.__getattribute__(self, name) if name != "__class__" else cls

    def __setattr__(self: Any, name: str, value: object) -> None:
        if conversion.bypass(self):  # the transformer: its object was snapshotted whole
            cls.__setattr__(self, name, value)  # type: ignore[call-arg]  # the instances' one
            return
        conversion.convert(self)
        setattr(self, name, value)

    def __delattr__(self: Any, name: str) -> None:
        if conversion.bypass(self):
            cls.__delattr__(self, name)  # type: ignore[call-arg]  # the instances' one
            return
        conversion.convert(self)
        delattr(self, name)

    def __new__(klass: type, *args: Any, **kwargs: Any) -> Any:
        return cls(*args, **kwargs)  # type(obj)(...) on a pending object builds a live one

    existing_del = getattr(cls, "__del__", None)

    def __del__(self: Any) -> None:
        if type(self) is conversion.pending_cls:
            conversion.forget()
        if existing_del is not None:
            existing_del(self)

    namespace: dict[str, Any] = {
        "__slots__": (),  # the same layout as the live class, slotted or not
        "__new__": __new__,
        "__del__": __del__,
        "__getattribute__": __getattribute__,
        "__setattr__": __setattr__,
        "__delattr__": __delattr__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__pymoult_pending__": conversion,
    }
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if (name.startswith("__") and name.endswith("__") and name not in _NOT_WRAPPED
                    and name not in namespace and callable(value)):
                namespace[name] = _special_wrapper(cls, conversion, name)
    if "__hash__" in namespace and getattr(cls, "__hash__", None) is None:
        namespace["__hash__"] = None
    return type(cls)(cls.__name__, (cls,), namespace)


def _special_wrapper(cls: type, conversion: LazyConversion, name: str) -> Callable[..., Any]:
    def special(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not conversion.bypass(self):
            conversion.convert(self)
        return getattr(cls, name)(self, *args, **kwargs)

    special.__name__ = name
    return special


def startLazyUpdate(cls: type[T], transformer: Callable[[T], object] | None,
                    journal: Journal | None = None,
                    on_convert: Callable[[T], object] | None = None,
                    on_done: Callable[[], object] | None = None) -> LazyConversion:
    """Convert every instance of ``cls`` (exactly, not its subclasses) on its first access.

    ``transformer(obj)`` runs in the thread that first touches ``obj``; see the module notes.
    ``on_convert(obj)`` is called after each conversion and ``on_done()`` once none is pending.
    Returns the :class:`LazyConversion` (``.done`` is an Event set when no object is pending).
    """
    if not isinstance(cls, type):
        raise PymoultTypeError(f"expected a class, got {cls!r}")
    if transformer is not None and not callable(transformer):
        raise PymoultTypeError(f"transformer must be callable, got {transformer!r}")
    journal = current_journal(journal)
    conversion = LazyConversion(cls, transformer, on_convert, on_done,
                                keep_history=journal is not None)
    with _open_lock:
        running = _open.get(cls)
        if running is not None and not running.done.is_set():
            raise ThreadStateError(f"a lazy conversion of {describe(cls)} is still open "
                                   f"({running.pending_count} objects pending)")
        _open[cls] = conversion
    objects = instances_of(cls, subclasses=False)
    pending_cls = _make_pending_class(cls, conversion)
    conversion.pending_cls = pending_cls
    with conversion.lock:
        for obj in objects:
            object.__setattr__(obj, "__class__", pending_cls)
        conversion.pending_count = len(objects)
        if not objects:
            conversion._finish()
    del objects
    if journal is not None:
        journal.record(conversion)
    return conversion
