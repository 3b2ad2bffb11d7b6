"""Reaching the program's data: the instances of a class, the heap from a module, eager updates.

Finding instances
-----------------
:class:`DataAccessor` (``"immediate"``) and :func:`startEagerUpdate` find instances with one
``gc.get_referrers`` scan (:mod:`~pymoult.lowlevel.instances`). The ``"progressive"`` strategy
and :func:`startLazyUpdate` reach each object when the program first touches it
(:mod:`~pymoult.lowlevel.lazy_conversion`).

Eager update
------------
:func:`startEagerUpdate` runs a transformer on every instance now. With ``atomic=True`` (the
default) each batch of instances has its state saved before the transformer runs on it
(:mod:`~pymoult.lowlevel.object_state`: class, attributes, slots, at C speed, with no per-object
container and without giving inline objects a dict), so whatever the transformer writes, and
however, can be undone. If the transformer raises on the k-th object, the k-1 before it are
restored and ``TransformerError`` carries the object (a ``BaseException`` such as
``KeyboardInterrupt`` is re-raised as itself, after the restore); on success the saved states
are one journal operation, so the update can still be rolled back. ``atomic=False`` saves
nothing and runs at the transformer's own speed, but a failure then leaves the objects before it
converted. Figures: ``benchmarks/bench_data.py``.
"""

from __future__ import annotations

import gc
import queue
import sys
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import PymoultTypeError, WrongStrategy
from .instances import instances_of
from .journal import current_journal, describe
from .lazy_conversion import startLazyUpdate
from .object_conversion import transform_all
from .object_state import ObjectStates

if TYPE_CHECKING:
    from .journal import Journal

__all__ = ["DataAccessor", "HeapWalker", "traverseHeap", "startEagerUpdate", "startLazyUpdate",
           "instances_of"]

STRATEGIES = ("immediate", "progressive")

T = TypeVar("T")


class DataAccessor(Generic[T]):
    """An iterator over the instances of ``cls``.

    ``strategy="immediate"``: every instance alive now, found at construction.
    ``strategy="progressive"``: each instance as the program first touches it after the accessor
    is made (it uses the lazy-conversion mechanism with no transformer; ``type(obj)`` is a
    pending subclass until then); iteration blocks until the next touch and ends when every
    instance has been touched. Any other strategy raises ``WrongStrategy``.
    """

    _END = object()

    def __init__(self, cls: type[T], strategy: str = "immediate") -> None:
        if strategy not in STRATEGIES:
            raise WrongStrategy(f"unknown strategy {strategy!r}: use one of {STRATEGIES}")
        self.cls = cls
        self.strategy = strategy
        self._touched: queue.SimpleQueue[Any] | None
        if strategy == "immediate":
            self._objects = iter(instances_of(cls))
            self._touched = None
        else:
            touched = self._touched = queue.SimpleQueue()
            self.conversion = startLazyUpdate(cls, None, on_convert=touched.put,
                                              on_done=lambda: touched.put(self._END))

    def __iter__(self) -> DataAccessor[T]:
        return self

    def __next__(self) -> T:
        if self._touched is None:
            return next(self._objects)
        obj = self._touched.get()
        if obj is self._END:
            self._touched.put(self._END)  # stay exhausted
            raise StopIteration
        return obj


class HeapWalker:
    """Visits objects by type: define ``walk_<typename>(obj)`` methods in a subclass
    (``walk_list``, ``walk_dict``, ``walk_Session``...); :func:`traverseHeap` calls the one
    matching each reachable object's type name, and :meth:`walk` for every object."""

    def walk(self, obj: Any) -> None:
        method = getattr(self, "walk_" + type(obj).__name__, None)
        if method is not None:
            method(obj)


# objects whose contents are code and namespaces, not the program's data: visited, not entered
_OPAQUE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.CodeType,
           types.FrameType, types.MethodType)


def traverseHeap(walker: HeapWalker, module_names: str | Iterable[str] = ("__main__",),
                 journal: Journal | None = None) -> int:
    """Give ``walker.walk`` every object reachable from the globals of the named modules, once.

    The traversal follows containers and instances (``gc.get_referents``) but does not enter
    modules, classes, functions, code or frames, so it walks the program's data rather than the
    whole interpreter. Returns the number of objects visited.

    With a journal (the current one by default), the own state of each instance of a Python
    class is saved before the walker sees it (as a transformer's objects are): if the walker
    raises, anything, the instances it changed are restored before the exception goes on; once
    the walk is over the saved states are one journal operation. The contents of builtin
    containers (lists, dicts) are not saved.
    """
    if not callable(getattr(walker, "walk", None)):
        raise PymoultTypeError(f"walker must have a walk(obj) method, got {walker!r}")
    if isinstance(module_names, str):
        module_names = [module_names]
    roots: list[Any] = []
    for name in module_names:
        module = sys.modules.get(name)
        if module is None:
            raise PymoultTypeError(f"no module named {name!r} is loaded")
        roots.extend(vars(module).values())
    journal = current_journal(journal)
    states = None if journal is None else ObjectStates(
        f"heap traversal by {describe(type(walker))}")
    seen: dict[int, Any] = {}
    todo = list(roots)
    try:
        while todo:
            obj = todo.pop()
            if id(obj) in seen:
                continue
            seen[id(obj)] = obj  # keeps it alive, so ids stay unique during the walk
            if states is not None and type(obj).__flags__ & _HEAPTYPE and \
                    not isinstance(obj, _OPAQUE):
                states.take([obj])
            walker.walk(obj)
            if not isinstance(obj, _OPAQUE):
                todo.extend(gc.get_referents(obj))
    except BaseException:
        if states is not None:
            states.undo()
        raise
    if journal is not None and states is not None and len(states):  # (states means a journal)
        journal.record(states)
    return len(seen)


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python


def startEagerUpdate(cls: type[T], transformer: Callable[[T], object], atomic: bool = True,
                     journal: Journal | None = None, subclasses: bool = True) -> int:
    """Run ``transformer(obj)`` on every instance of ``cls`` now; returns how many.

    See the module notes for ``atomic``. Raises ``TransformerError`` (``.obj``, ``.index``,
    ``.count``) if the transformer fails; with ``atomic`` the instances are then as before.
    """
    if not callable(transformer):
        raise PymoultTypeError(f"transformer must be callable, got {transformer!r}")
    journal = current_journal(journal)
    objects = instances_of(cls, subclasses)
    states = transform_all(objects, transformer, f"eager update of {describe(cls)}", atomic,
                           progress=journal)
    if journal is not None and len(states):
        journal.record(states)
    return len(objects)
