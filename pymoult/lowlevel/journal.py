"""The undo journal: every mutation an update makes, recorded as data.

Each lowlevel mechanism that changes the program (a code swap, an attribute set, a local variable
write...) records an :class:`Operation` in the *current* journal before returning. An operation
is data with a readable ``str`` ("swap code of app.handle", "set app.VERSION (was 1)"), which gives
at once a log of what an update did, an audit trail, and exact rollback: :meth:`Journal.rollback`
undoes the operations in reverse order.

The current journal is per thread: ``with journal.recording(): ...`` makes ``journal`` current in
the calling thread for the block (managers wrap an update's steps in it). Mechanisms also take an
explicit ``journal=`` argument. With no journal, mutations are applied and not recorded.

Changes made *without* Pymoult's mechanisms to namespaces an update names (module globals, class
attributes) are journaled too: :meth:`Journal.watch` copies those namespaces, and
:meth:`NamespaceWatch.settle` records what changed meanwhile that no recorded operation covers
(:class:`ChangedOutside`), so that a rollback undoes it as well. The copy is shallow (which name
is bound to which object): changes inside those objects are not seen.

A mechanism that works through many objects (an eager conversion) also says in the journal how
far it has got (:meth:`Journal.report_progress`, read as ``journal.progress``), once per batch of
objects, so that an operator can follow a long update (``pymoult status``).
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import itertools
import logging
import operator
import threading
import types
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Final, TypeVar

from .._cpython import dict_version
from ..errors import PymoultTypeError, RollbackError, ThreadStateError

__all__ = ["Operation", "SetAttribute", "SetItem", "ChangedOutside", "NamespaceWatch", "Journal",
           "current_journal", "MISSING", "set_attribute", "delete_attribute"]

logger = logging.getLogger("pymoult")

_local = threading.local()

OperationT = TypeVar("OperationT", bound="Operation")


class _Missing(enum.Enum):
    """The type of :data:`MISSING`: an enum of one member, so that a type checker narrows
    ``value is MISSING`` (and a copy of it is itself)."""

    MISSING = "missing"

    def __repr__(self) -> str:
        return "<missing>"

    __str__ = __repr__


#: Marks an attribute or item that did not exist before an operation.
MISSING: Final = _Missing.MISSING


def describe(obj: object) -> str:
    """A short readable name for ``obj`` in operation texts: ``module.qualname`` when it has one."""
    if isinstance(obj, types.CodeType):
        return getattr(obj, "co_qualname", obj.co_name)
    if isinstance(obj, (staticmethod, classmethod)):
        return f"{type(obj).__name__} {describe(obj.__func__)}"
    if isinstance(obj, property):
        return f"property {describe(obj.fget)}" if obj.fget is not None else "property"
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if isinstance(qualname, str):
        return f"{module}.{qualname}" if isinstance(module, str) else qualname
    name = getattr(obj, "__name__", None)
    if isinstance(name, str):
        return name
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


class Operation:
    """One recorded mutation. Subclasses set ``text`` and implement :meth:`undo`."""

    text = "operation"

    def undo(self) -> None:
        """Return the program to its state before this operation."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.text}>"


class SetAttribute(Operation):
    """``setattr(target, name, new)``; undo puts ``old`` back (or deletes what did not exist)."""

    def __init__(self, target: object, name: str, old: Any, new: Any) -> None:
        self.target, self.name, self.old, self.new = target, name, old, new
        was = "new" if old is MISSING else f"was {describe(old)}"
        verb = "delete" if new is MISSING else "set"
        self.text = f"{verb} {describe(target)}.{name} ({was})"

    def undo(self) -> None:
        if self.old is MISSING:
            if self.name in getattr(self.target, "__dict__", {}) or hasattr(self.target, self.name):
                delattr(self.target, self.name)
        else:
            setattr(self.target, self.name, self.old)


class SetItem(Operation):
    """``mapping[key] = new``; undo puts ``old`` back (or removes a key that did not exist)."""

    def __init__(self, mapping: MutableMapping[Any, Any], key: Any, old: Any, new: Any,
                 owner: object = None) -> None:
        self.mapping, self.key, self.old, self.new = mapping, key, old, new
        was = "new" if old is MISSING else f"was {describe(old)}"
        where = describe(owner) if owner is not None else type(mapping).__name__
        self.text = f"set {where}[{key!r}] ({was})"

    def undo(self) -> None:
        if self.old is MISSING:
            self.mapping.pop(self.key, None)
        else:
            self.mapping[self.key] = self.old


class ChangedOutside(Operation):
    """A name of a watched namespace (a module or a class) that changed without a recorded
    operation; undo binds the old value again (or removes a name that did not exist)."""

    def __init__(self, namespace: object, name: str, old: Any, new: Any) -> None:
        self.namespace, self.name, self.old, self.new = namespace, name, old, new
        was = "new" if old is MISSING else f"was {describe(old)}"
        verb = "delete" if new is MISSING else "set"
        self.text = f"{verb} {describe(namespace)}.{name} outside Pymoult's mechanisms ({was})"

    def undo(self) -> None:
        if isinstance(self.namespace, type):
            if self.old is MISSING:
                if self.name in self.namespace.__dict__:
                    type.__delattr__(self.namespace, self.name)
            else:
                type.__setattr__(self.namespace, self.name, self.old)
        elif self.old is MISSING:
            vars(self.namespace).pop(self.name, None)
        else:
            vars(self.namespace)[self.name] = self.old


def _covers(operation: Operation, namespace: object, name: str) -> bool:
    """True when recorded ``operation`` is about ``namespace.name`` (its undo handles it)."""
    target = getattr(operation, "target", getattr(operation, "cls", None))
    if target is namespace and getattr(operation, "name", None) == name:
        return True
    mapping = getattr(operation, "mapping", None)
    return mapping is not None and mapping is vars(namespace) and \
        getattr(operation, "key", None) == name


def _changed_names(before: dict[Any, Any], now: dict[Any, Any]) -> list[Any]:
    """The keys of the dicts ``before`` and ``now`` whose value is not the same object in both
    (bound in one only, or to another object)."""
    changed = [name for name, old in before.items() if now.get(name, MISSING) is not old]
    return changed + [name for name in now if name not in before]


_COPY = operator.methodcaller("copy")


def _copies(namespaces: Iterable[object]) -> list[dict[Any, Any]]:
    """Shallow copies of the dicts of ``namespaces`` (modules, classes), made at C speed (a
    module's thousands of names, hundreds of classes): ``copy`` of a class's mappingproxy is
    a copy of the dict behind it."""
    return list(map(_COPY, map(vars, namespaces)))


class NamespaceWatch:
    """Shallow copies of namespaces taken by :meth:`Journal.watch`; see :meth:`settle`."""

    def __init__(self, journal: Journal, namespaces: Iterable[object]) -> None:
        self.journal = journal
        self.mark = len(journal.operations)
        self.namespaces = list({id(namespace): namespace for namespace in namespaces}.values())
        # the version tags of the namespaces that are dicts (modules'), read before the copies
        self.tags = [(index, vars(namespace), dict_version(vars(namespace)))
                     for index, namespace in enumerate(self.namespaces)
                     if type(vars(namespace)) is dict]
        self.copies = _copies(self.namespaces)

    def _touched(self) -> list[tuple[int, dict[Any, Any]]]:
        """The index and the current names of each watched namespace in which some name is
        bound to another object than in the copy, or no longer bound, or newly bound. A module
        whose dict has kept its version tag was not changed (``_cpython.dict_version``) and is
        not compared. The common case (the same names, a few rebound, in a module of thousands
        of names among classes left alone) is found at C speed, in one pass over all the names:
        the copies and the namespaces list the same names in the same order, and their values
        are compared in place."""
        kept = {index for index, mapping, tag in self.tags
                if tag is not None and dict_version(mapping) == tag}
        if not kept:
            return self._compared(range(len(self.namespaces)), self.copies, self.namespaces)
        if len(kept) == len(self.namespaces):
            return []
        indexes = [i for i in range(len(self.namespaces)) if i not in kept]
        return self._compared(indexes, [self.copies[i] for i in indexes],
                              [self.namespaces[i] for i in indexes])

    @staticmethod
    def _compared(indexes: list[int] | range, befores: list[dict[Any, Any]],
                  namespaces: list[object]) -> list[tuple[int, dict[Any, Any]]]:
        """:meth:`_touched` for ``namespaces`` (at ``indexes``), copied as ``befores``."""
        nows = _copies(namespaces)
        sizes = list(map(len, befores))
        chain = itertools.chain.from_iterable
        if sizes != list(map(len, nows)) or list(chain(befores)) != list(chain(nows)):
            return [(indexes[at], now) for at, (before, now) in enumerate(zip(befores, nows))
                    if _changed_names(before, now)]
        differs = list(map(operator.is_not, chain(map(dict.values, befores)),
                           chain(map(dict.values, nows))))
        if not any(differs):
            return []
        bounds = list(itertools.accumulate(sizes))  # which namespace: by the name's position
        touched = {bisect.bisect_right(bounds, position)
                   for position in itertools.compress(range(len(differs)), differs)}
        return [(indexes[at], nows[at]) for at in sorted(touched)]

    def settle(self) -> list[Operation]:
        """Record, as :class:`ChangedOutside` operations, every name of the watched namespaces
        that changed since the copy and that no operation recorded since covers. Returns them."""
        added: list[Operation] = []
        recorded = self.journal.operations[self.mark:]
        for index, now in self._touched():
            namespace, before = self.namespaces[index], self.copies[index]
            for name in _changed_names(before, now):
                old, new = before.get(name, MISSING), now.get(name, MISSING)
                if not isinstance(name, str):
                    continue
                if any(_covers(operation, namespace, name) for operation in recorded):
                    continue
                added.append(self.journal.record(ChangedOutside(namespace, name, old, new)))
        for operation in added:
            logger.warning("journal %s: %s", self.journal.name, operation)
        return added


class Journal:
    """The ordered record of an update's mutations, able to undo them all.

    States: ``open`` (recording), ``committed`` (the update is kept; nothing more may be
    recorded), ``rolled back``. Iterating gives the operations in the order they were made.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.operations: list[Operation] = []
        self.state = "open"
        #: How far the long mechanism last recording into this journal got: ``{"step",
        #: "done", "total"}`` (replaced whole, so any thread may read it), or None.
        self.progress: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def report_progress(self, step: str, done: int, total: int) -> None:
        """Say that mechanism ``step`` (a description) has handled ``done`` of ``total``
        objects. Mechanisms call it once per batch, not per object."""
        self.progress = {"step": step, "done": done, "total": total}

    def record(self, operation: OperationT) -> OperationT:
        """Append ``operation`` (already applied) and return it."""
        if not isinstance(operation, Operation):
            raise PymoultTypeError(f"a journal records Operation objects, got {operation!r}")
        with self._lock:
            if self.state != "open":
                raise ThreadStateError(f"journal {self.name!r} is {self.state}: "
                                       f"cannot record {operation}")
            self.operations.append(operation)
        logger.debug("journal %s: %s", self.name, operation)
        return operation

    def adopt(self, other: Journal) -> None:
        """Append every operation of journal ``other`` (a mechanism's own journal, committed
        here) in one step: either all of them are in this journal, or none (then ``other``
        still holds them, for its caller to roll back)."""
        operations = list(other.operations)
        if not all(isinstance(operation, Operation) for operation in operations):
            raise PymoultTypeError(f"journal {other.name!r} holds something not an Operation")
        with self._lock:
            if self.state != "open":
                raise ThreadStateError(f"journal {self.name!r} is {self.state}: cannot adopt "
                                       f"{len(operations)} operations of {other.name!r}")
            self.operations.extend(operations)
        other.operations = []
        other.state = "committed"
        for operation in operations:
            logger.debug("journal %s: %s", self.name, operation)

    @contextlib.contextmanager
    def recording(self) -> Iterator[Journal]:
        """Make this journal the calling thread's current journal for the block."""
        previous = getattr(_local, "journal", None)
        _local.journal = self
        try:
            yield self
        finally:
            _local.journal = previous

    def watch(self, namespaces: Iterable[object]) -> NamespaceWatch:
        """Copy ``namespaces`` (modules, classes) now; the returned :class:`NamespaceWatch`'s
        ``settle()`` records what changed in them since without a recorded operation."""
        return NamespaceWatch(self, namespaces)

    def commit(self) -> None:
        """Close the journal: the update stays. The operations remain readable."""
        with self._lock:
            if self.state != "open":
                raise ThreadStateError(f"journal {self.name!r} is already {self.state}")
            self.state = "committed"

    def rollback(self) -> None:
        """Undo every operation, newest first.

        Every undo is attempted even if one fails; failures are then raised together as
        ``RollbackError`` (with ``.failures``, a list of ``(operation, exception)``), after the
        others were undone.
        """
        with self._lock:
            if self.state == "rolled back":
                raise ThreadStateError(f"journal {self.name!r} was already rolled back")
            operations = list(reversed(self.operations))
            self.state = "rolled back"
        failures: list[tuple[Operation, Exception]] = []
        for operation in operations:
            try:
                operation.undo()
            except Exception as exc:  # keep undoing the rest: a partial rollback is worse
                logger.exception("journal %s: could not undo %s", self.name, operation)
                failures.append((operation, exc))
        if failures:
            raise RollbackError(
                f"{len(failures)} of {len(operations)} operations of {self.name!r} could not be "
                f"undone: " + "; ".join(str(op) for op, _ in failures), failures=failures)
        logger.info("journal %s: rolled back %d operations", self.name, len(operations))

    def __iter__(self) -> Iterator[Operation]:
        return iter(list(self.operations))

    def __len__(self) -> int:
        return len(self.operations)

    def __str__(self) -> str:
        lines = [f"journal {self.name!r} ({self.state}, {len(self.operations)} operations)"]
        lines += [f"  {i}. {op}" for i, op in enumerate(self.operations, 1)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Journal {self.name!r} {self.state} operations={len(self.operations)}>"


def current_journal(journal: Journal | None = None) -> Journal | None:
    """``journal`` if given, else the calling thread's current journal, else None."""
    if journal is not None:
        if not isinstance(journal, Journal):
            raise PymoultTypeError(f"expected a Journal, got {journal!r}")
        return journal
    return getattr(_local, "journal", None)


def set_attribute(target: object, name: str, value: object,
                  journal: Journal | None = None) -> None:
    """``setattr`` recorded in the journal (the building block of most mechanisms)."""
    old = target.__dict__.get(name, MISSING) if hasattr(target, "__dict__") else getattr(
        target, name, MISSING)
    setattr(target, name, value)
    journal = current_journal(journal)
    if journal is not None:
        journal.record(SetAttribute(target, name, old, value))


def delete_attribute(target: object, name: str, journal: Journal | None = None) -> None:
    """``delattr`` recorded in the journal (undo puts the value back)."""
    old = target.__dict__.get(name, MISSING) if hasattr(target, "__dict__") else getattr(
        target, name, MISSING)
    delattr(target, name)
    journal = current_journal(journal)
    if journal is not None:
        journal.record(SetAttribute(target, name, old, MISSING))
