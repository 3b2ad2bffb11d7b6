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
  last pending object is converted, the pending class has no instance left and no hook remains.

The cost to know: moving an object to the pending class and back assigns ``__class__`` twice; on
CPython 3.11+ that turns its inline attribute values into a dict, and its attribute reads then
cost about 2-3x as much for the rest of its life (``benchmarks/bench_data.py``). That is a CPython
fact no hook-free design avoids while keeping each object's identity; where the pause allows, an
eager update of a class updated in place is faster for the objects afterwards.

While pending, ``type(obj)`` is the pending class (``isinstance`` and ``obj.__class__`` give the
live class). A transformer that raises leaves the object pending and its changes undone, logs the
error, and raises ``TransformerError`` in the thread that touched it; the next touch retries.
"""

import logging
import threading

from ..errors import PymoultTypeError, TransformerError
from .data_update import AttributeWrites
from .instances import instances_of
from .journal import MISSING, Operation, current_journal, describe

__all__ = ["startLazyUpdate", "LazyConversion"]

logger = logging.getLogger("pymoult")

# special methods that must not be wrapped (the hooks themselves, construction, class plumbing)
_NOT_WRAPPED = {
    "__getattribute__", "__getattr__", "__setattr__", "__delattr__", "__class__", "__new__",
    "__init__", "__init_subclass__", "__subclasshook__", "__dict__", "__weakref__", "__module__",
    "__doc__", "__slots__", "__qualname__", "__class_getitem__", "__set_name__", "__del__",
}


class LazyConversion(Operation):
    """A lazy conversion of the instances of a class: the pending objects, the conversions done,
    and undo (the pending ones go back unconverted, the converted ones are restored)."""

    def __init__(self, cls, transformer, on_convert=None, on_done=None):
        self.cls = cls
        self.transformer = transformer
        self.on_convert = on_convert
        self.on_done = on_done
        self.lock = threading.RLock()
        self.pending_count = 0
        self.converted = 0
        self.writes = AttributeWrites(f"lazy conversion of {describe(cls)}")
        self.converting = {}  # thread ident -> set of ids of objects it is transforming
        self.pending_cls = None
        self.done = threading.Event()
        self.stopped = False

    @property
    def text(self):
        return (f"lazy conversion of {describe(self.cls)} ({self.converted} converted, "
                f"{self.pending_count} pending)")

    def undo(self):
        with self.lock:
            self.stopped = True
            pending_cls = self.pending_cls
            if pending_cls is not None:
                for obj in [o for o in instances_of(pending_cls, subclasses=False)]:
                    object.__setattr__(obj, "__class__", self.cls)
            self.writes.undo()
            self.pending_count = 0
            self._finish()

    def _finish(self):
        self.pending_cls = None  # drop our reference: the class and its hooks can go
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def convert(self, obj):
        """Transform ``obj`` (a pending object) now, in the calling thread."""
        me = threading.get_ident()
        with self.lock:
            if object.__getattribute__(obj, "__class__") is not self.pending_cls or self.stopped:
                return  # converted meanwhile by another thread (or the update was undone)
            mine = self.converting.setdefault(me, set())
            if id(obj) in mine:
                return  # the transformer touching its own object
            mine.add(id(obj))
            mark = len(self.writes.entries)
            try:
                state = getattr_plain(obj, "__dict__")
                if state is not MISSING:  # already a dict (the class swap made it): cheap to copy
                    self.writes.entries.append((obj, None, dict(state)))
                if self.transformer is not None:
                    self.transformer(obj)
            except Exception as exc:
                undone = self.writes.entries[mark:]
                del self.writes.entries[mark:]
                partial = AttributeWrites("failed transformer")
                partial.entries = undone
                partial.undo()
                logger.exception("lazy conversion of a %s failed", describe(self.cls))
                raise TransformerError(
                    f"transformer {describe(self.transformer)} raised {exc!r} converting a "
                    f"{describe(self.cls)} on its first access", obj=obj) from exc
            finally:
                mine.discard(id(obj))
            object.__setattr__(obj, "__class__", self.cls)
            self.converted += 1
            self.pending_count -= 1
            if self.on_convert is not None:
                self.on_convert(obj)
            if self.pending_count <= 0:
                self._finish()

    def bypass(self, obj):
        """True when the calling thread is transforming ``obj`` (its accesses go straight)."""
        mine = self.converting.get(threading.get_ident())
        return bool(mine) and id(obj) in mine


def _make_pending_class(cls, conversion):
    def __getattribute__(self, name):
        if not conversion.bypass(self):
            conversion.convert(self)
            return getattr(self, name)  # now an instance of the live class: no hook
        return object.__getattribute__(self, name) if name != "__class__" else cls

    def __setattr__(self, name, value):
        if conversion.bypass(self):
            conversion.writes.entries.append((self, name, getattr_plain(self, name)))
            cls.__setattr__(self, name, value)
            return
        conversion.convert(self)
        setattr(self, name, value)

    def __delattr__(self, name):
        if conversion.bypass(self):
            conversion.writes.entries.append((self, name, getattr_plain(self, name)))
            cls.__delattr__(self, name)
            return
        conversion.convert(self)
        delattr(self, name)

    namespace = {
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


def getattr_plain(obj, name):
    try:
        return object.__getattribute__(obj, name)
    except AttributeError:
        return MISSING


def _special_wrapper(cls, conversion, name):
    def special(self, *args, **kwargs):
        if not conversion.bypass(self):
            conversion.convert(self)
        return getattr(cls, name)(self, *args, **kwargs)

    special.__name__ = name
    return special


def startLazyUpdate(cls, transformer, journal=None, on_convert=None, on_done=None):
    """Convert every instance of ``cls`` (exactly, not its subclasses) on its first access.

    ``transformer(obj)`` runs in the thread that first touches ``obj``; see the module notes.
    ``on_convert(obj)`` is called after each conversion and ``on_done()`` once none is pending.
    Returns the :class:`LazyConversion` (``.done`` is an Event set when no object is pending).
    """
    if not isinstance(cls, type):
        raise PymoultTypeError(f"expected a class, got {cls!r}")
    if transformer is not None and not callable(transformer):
        raise PymoultTypeError(f"transformer must be callable, got {transformer!r}")
    conversion = LazyConversion(cls, transformer, on_convert, on_done)
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
    journal = current_journal(journal)
    if journal is not None:
        journal.record(conversion)
    return conversion
