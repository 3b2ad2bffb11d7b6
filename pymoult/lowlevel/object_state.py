"""Objects' own state, saved before code that may change them runs, and put back exactly.

:class:`ObjectStates` is a journal operation: ``take(objects)`` saves each object's class, its
instance attributes and its slots; ``undo()`` puts them back, whatever the code did in between:
plain ``setattr``, writes through ``vars(obj)``, ``object.__setattr__``, deletions, a new
``__class__``, a replaced ``__dict__``. Changes made *inside* the attribute values (a list the
object holds, another object) are not part of an object's own state and are not saved.

Why a snapshot, and why columns
-------------------------------
Recording writes one by one (a class-level ``__setattr__`` hook) costs a Python call per write
(~1 us) and misses writes that bypass the hook; a snapshot sees everything and runs at C speed.
It must not cost more than it saves, and must not change the objects:

- reading ``obj.__dict__`` on 3.11/3.12 turns the object's inline values into a dict for good
  (reads ~3x slower; ``pymoult._cpython.READING_DICT_SLOWS``), so the fast path never reads it.
  It learns a class's attribute names from one object (whose dict it does read), then reads
  those names on every object with one ``operator.attrgetter`` per name mapped over a batch
  (C speed), and proves that each object holds exactly those names: ``gc.get_referents`` of a
  batch gives each object's values then its class (3.11+; 3.10: ``len`` of its dict); the
  right total and no class where a value should stand prove it with one ``type()`` per value
  (:meth:`_Plan.holds_exactly`), dict-valued attributes included;
- it keeps no per-object container: values are stored in one list per attribute name per batch
  (columns).

Objects that do not fit (an attribute set other than the learnt one, slots *and* a dict, a
builtin base, a custom ``__getattribute__``/``__getattr__``, a descriptor shadowed by an
instance attribute) are saved whole: a copy of their dict and their slot values. A batch that
fails the bulk check is looked at one object at a time (slower, as exact). Undo never reads
``__dict__`` of an inline object unless the code it undoes added an attribute whose name it
cannot learn otherwise (then that object keeps a dict on 3.11/3.12).
"""

from __future__ import annotations

import gc
import itertools
import logging
import operator
import types
from collections.abc import Iterable, Sequence
from typing import Any

from .. import _cpython
from ..errors import RollbackError
from .journal import MISSING, Operation, describe

__all__ = ["ObjectStates", "own_state", "restore_state"]

logger = logging.getLogger("pymoult")

#: What :func:`own_state` returns (see there); a value may be ``MISSING``.
OwnState = dict[str, Any]

_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE
_get = object.__getattribute__
_set = object.__setattr__


def _lookup(cls: type, name: str) -> Any:
    """``name`` in the first class of ``cls``'s MRO that defines it (no descriptor runs)."""
    for klass in cls.__mro__:
        namespace = klass.__dict__
        if name in namespace:
            return namespace[name]
    return MISSING


def _is_data_descriptor(value: object) -> bool:
    kind = type(value)
    return hasattr(kind, "__set__") or hasattr(kind, "__delete__")


def slot_names(cls: type) -> list[str]:
    """The attribute names of ``cls``'s slots (all bases), private names mangled."""
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"
            names.append(name)
    return names


def own_state(obj: object) -> OwnState:
    """Everything ``obj`` holds itself: ``{"__class__", "__dict__" (the dict object, or
    MISSING), "__dict_copy__", "__slots__": {name: value or MISSING}}``."""
    cls = type(obj)
    try:
        own = _get(obj, "__dict__")
    except AttributeError:
        own = MISSING
    slots = {}
    for name in slot_names(cls):
        try:
            slots[name] = _get(obj, name)
        except AttributeError:
            slots[name] = MISSING
    return {"__class__": cls, "__dict__": own,
            "__dict_copy__": dict(own) if isinstance(own, dict) else MISSING, "__slots__": slots}


def restore_state(obj: object, state: OwnState) -> None:
    """Put back what :func:`own_state` saved, bypassing the class's own hooks."""
    if type(obj) is not state["__class__"]:
        _set(obj, "__class__", state["__class__"])
    own = state["__dict__"]
    if own is not MISSING:
        try:
            current = _get(obj, "__dict__")
        except AttributeError:
            current = MISSING
        if current is not own:
            _set(obj, "__dict__", own)
        own.clear()
        own.update(state["__dict_copy__"])
    for name, value in state["__slots__"].items():
        if value is MISSING:
            try:
                object.__delattr__(obj, name)
            except AttributeError:
                pass
        else:
            _set(obj, name, value)


class _Plan:
    """How the instances of one class are saved fast: the names each holds, one getter each."""

    __slots__ = ("cls", "names", "name_set", "getters", "shadowed", "has_dict", "extras")

    def __init__(self, cls: type, names: Iterable[str], has_dict: bool,
                 shadowed: list[tuple[int, object]]) -> None:
        self.cls, self.names, self.has_dict, self.shadowed = cls, tuple(names), has_dict, shadowed
        self.name_set = frozenset(names)
        self.getters = [operator.attrgetter(name) for name in names]
        #: names undo found added (learnt once, deleted without reading dicts)
        self.extras: list[str] = []

    def holds_exactly(self, objects: Sequence[Any], columns: list[list[Any]]) -> bool:
        """True when every object (all of them of class ``cls``, all holding every name: the
        getters succeeded) holds no other attribute."""
        for index, value in self.shadowed:  # a class default found, not the object's own value
            if id(value) in set(map(id, columns[index])):
                return False
        if not self.has_dict:
            return True  # slots only: nothing else to hold
        count, width = len(objects), len(self.names)
        if not _cpython.ATTRIBUTES_INLINE:
            return sum(map(len, map(_get, objects, itertools.repeat("__dict__")))) == \
                count * width
        # Each object (of the plan's class: nothing else to traverse) gives its values then its
        # class, or (a dict made) its dict then its class. With the right total and no class
        # where a value should stand, each object's last referent, its class, stands where a
        # class should: each object gives a multiple of width + 1 referents. A made dict gives
        # 2: no multiple when width >= 2; when width == 1 its dict stands where a value should
        # (no dict there proves there is none). So every object gives width + 1 or more (an
        # inline object holds every name), and the total says each gives exactly width + 1.
        # One type() per value, none per class; objects holding a dict stay on this path.
        referents = gc.get_referents(*objects)
        if len(referents) == count * (width + 1):
            step = width + 1
            kinds: set[type] = set()  # the types of what stands where the values should
            for index in range(width):
                kinds.update(map(type, referents[index::step]))
            if not any(issubclass(kind, type) or (width == 1 and issubclass(kind, dict))
                       for kind in kinds):
                return True
            # values that are classes: no dict at all among them proves no dict was made
            # (then each object gives width + 1 or more, and the total decides)
            kinds.update(map(type, referents[width::step]))
            if not any(issubclass(kind, dict) for kind in kinds):
                return True
        if width < 2:  # a dict and the class may be a made dict: see the objects one by one
            return False
        # a made dict gives 2 referents, fewer than width + 1: each count decides alone
        return list(map(len, map(gc.get_referents, objects))).count(width + 1) == count

    def holds_exactly_one(self, obj: object, values: list[Any]) -> bool:
        for index, value in self.shadowed:
            if values[index] is value:
                return False
        if not self.has_dict:
            return True
        width = len(self.names)
        if not _cpython.ATTRIBUTES_INLINE:
            return len(_get(obj, "__dict__")) == width
        referents = gc.get_referents(obj)
        if len(referents) != width + 1:
            return False
        if width != 1:
            return True  # width 0: a made dict would give 2; width 2+: a made dict gives 2
        value = values[0]  # [value, class], or [its dict, class]: the dict is not its value
        return referents[0] is value and not (
            isinstance(value, dict) and value.get(self.names[0]) is value)


class _Plain:
    pass


def _plain_layout(cls: type) -> bool:
    """True when instances of ``cls`` are laid out as a plain class's (no builtin base, no
    slots): the collector then sees only their attributes (or their dict) and their class."""
    return cls.__basicsize__ == _Plain.__basicsize__ and cls.__itemsize__ == 0 and all(
        klass.__flags__ & _HEAPTYPE for klass in cls.__mro__[:-1]) and cls.__mro__[-1] is object


#: Attribute sets learnt per class at most: objects of another shape are saved whole.
MAX_SHAPES = 8


def _plan_for(cls: type, sample_state: OwnState) -> _Plan | None:
    """A :class:`_Plan` for ``cls``, its names learnt from one instance's state, or None when
    its instances must be saved whole."""
    if not cls.__flags__ & _HEAPTYPE or cls.__getattribute__ is not object.__getattribute__ \
            or _lookup(cls, "__getattr__") is not MISSING:
        return None
    slots = slot_names(cls)
    has_dict = cls.__dictoffset__ != 0
    if has_dict:
        if slots or type(_lookup(cls, "__dict__")) is not types.GetSetDescriptorType:
            return None
        if not _plain_layout(cls):
            return None  # a builtin base (list, Exception...) gives referents of its own
        own = sample_state["__dict_copy__"]
        if own is MISSING or not all(type(name) is str for name in own):
            return None
        names, shadowed = list(own), []
        for index, name in enumerate(names):
            value = _lookup(cls, name)
            if value is MISSING:
                continue
            if hasattr(type(value), "__get__"):  # getattr would not show the object's own value
                return None
            shadowed.append((index, value))
        return _Plan(cls, names, True, shadowed)
    if not all(type(_lookup(cls, name)) is types.MemberDescriptorType for name in slots):
        return None
    return _Plan(cls, slots, False, [])


class ObjectStates(Operation):
    """The saved state of objects (see the module notes); undo restores every one of them."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.count = 0
        #: (plan, objects, columns), one per batch of a class
        self._fast: list[tuple[_Plan, list[Any], list[list[Any]]]] = []
        self._whole: list[tuple[Any, OwnState]] = []  # (obj, own_state(obj))
        #: class -> the _Plans learnt (its shapes), in the order learnt
        self._plans: dict[type, list[_Plan]] = {}
        self._whole_only: set[type] = set()  # classes whose instances are always saved whole

    @property
    def text(self) -> str:  # type: ignore[override]  # the count changes as objects are saved
        return f"{self.description}: state of {self.count} objects saved"

    def __len__(self) -> int:
        return self.count

    def take(self, objects: Sequence[Any]) -> None:
        """Save the state of each object of ``objects`` (a list; each object once)."""
        if not objects:
            return
        first = type(objects[0])
        if operator.countOf(map(type, objects), first) == len(objects):  # no list of types
            self._take_class(first, objects)
        else:
            groups: dict[type, list[Any]] = {}
            for obj in objects:
                groups.setdefault(type(obj), []).append(obj)
            for cls, group in groups.items():
                self._take_class(cls, group)
        self.count += len(objects)

    def _take_class(self, cls: type, objects: Sequence[Any]) -> None:
        plans = self._plans.get(cls)
        if plans is None:
            # learn the class's usual attribute set from one object (on 3.11/3.12 reading its
            # __dict__ gives it a dict: one object per shape pays that, not every object)
            sample = objects[0]
            plans = self._plans[cls] = []
            self._save_whole(cls, sample)
            objects = objects[1:]
            if not objects:
                return
        if not plans:
            for obj in objects:
                self._save_whole(cls, obj)
            return
        plan = plans[0]  # the shape most objects had so far (see _one_by_one)
        columns: list[list[Any]] | None
        try:
            columns = [list(map(getter, objects)) for getter in plan.getters]
        except Exception:  # one object lacks a name: see them one by one
            columns = None
        if columns is not None and plan.holds_exactly(objects, columns):
            self._add_fast(plan, objects, columns)
        else:
            self._one_by_one(cls, plans, objects)

    def _add_fast(self, plan: _Plan, objects: Sequence[Any], columns: list[list[Any]]) -> None:
        """Keep a batch saved in bulk: appended to the previous one when it has the same plan,
        so that a million saved objects are a few long lists, not a few per batch (hundreds of
        young containers would start a collection that traverses them all as the update ends)."""
        if self._fast and self._fast[-1][0] is plan:
            _, saved, saved_columns = self._fast[-1]
            saved.extend(objects)
            for saved_column, column in zip(saved_columns, columns):
                saved_column.extend(column)
        else:
            self._fast.append((plan, list(objects), columns))  # a list of its own: extended

    def _save_whole(self, cls: type, obj: object) -> None:
        """Save ``obj`` whole; learn its attribute set as a new shape of ``cls`` if it has one."""
        state = own_state(obj)
        self._whole.append((obj, state))
        plans = self._plans[cls]
        if cls in self._whole_only or len(plans) >= MAX_SHAPES:
            return
        plan = _plan_for(cls, state)
        if plan is None:
            if not plans:
                self._whole_only.add(cls)  # its first object did not fit: none will
        elif all(known.names != plan.names for known in plans):
            plans.append(plan)

    def _one_by_one(self, cls: type, plans: list[_Plan], objects: Sequence[Any]) -> None:
        found: dict[_Plan, tuple[list[Any], list[list[Any]]]] = {}  # plan -> (objects, columns)
        for obj in objects:
            for plan in plans:
                try:
                    values = [getter(obj) for getter in plan.getters]
                except Exception:
                    continue
                if plan.holds_exactly_one(obj, values):
                    chunk = found.get(plan)
                    if chunk is None:
                        chunk = found[plan] = ([], [[] for _ in plan.names])
                    chunk[0].append(obj)
                    for column, value in zip(chunk[1], values):
                        column.append(value)
                    break
            else:
                self._save_whole(cls, obj)
        for plan, (fast, columns) in found.items():
            self._fast.append((plan, fast, columns))
        # the most common shape first: the next batch is tried whole with it (an odd object
        # read first must not send every batch after it one object at a time)
        plans.sort(key=lambda plan: -len(found[plan][0]) if plan in found else 0)

    def undo(self) -> None:
        """Restore every saved object (newest first). Objects that cannot be restored are
        reported together in a ``RollbackError`` after all the others were."""
        failures: list[tuple[Any, Exception]] = []
        for plan, objects, columns in reversed(self._fast):
            for index in range(len(objects) - 1, -1, -1):
                obj = objects[index]
                try:
                    self._restore(plan, obj, [column[index] for column in columns])
                except Exception as exc:
                    failures.append((obj, exc))
        for obj, state in reversed(self._whole):
            try:
                restore_state(obj, state)
            except Exception as exc:
                failures.append((obj, exc))
        if failures:
            for obj, error in failures:
                logger.error("%s: could not restore a %s: %r", self.description,
                             describe(type(obj)), error)
            raise RollbackError(f"{self.description}: {len(failures)} of {self.count} objects "
                                f"could not be restored (first: {failures[0][1]!r})",
                                failures=failures)

    @staticmethod
    def _restore(plan: _Plan, obj: object, values: list[Any]) -> None:
        if type(obj) is not plan.cls:
            _set(obj, "__class__", plan.cls)
        for name, value in zip(plan.names, values):
            _set(obj, name, value)
        if plan.has_dict:
            _drop_added(plan, obj)


def _inline_and_exact(obj: object, width: int) -> bool:
    referents = gc.get_referents(obj)
    return len(referents) == width + 1 and not any(
        isinstance(referent, dict) for referent in referents[:-1])


def _drop_added(plan: _Plan, obj: object) -> None:
    """Delete the attributes ``obj`` holds beyond ``plan.names`` (it holds all of those)."""
    width = len(plan.names)
    if _cpython.ATTRIBUTES_INLINE:
        if _inline_and_exact(obj, width):
            return
        for name in plan.extras:  # names added to earlier objects: no dict read needed
            try:
                object.__delattr__(obj, name)
            except AttributeError:
                pass
        if _inline_and_exact(obj, width):
            return
    own = _get(obj, "__dict__")  # the names are unknown: read them (3.11/3.12: a dict for good)
    for name in [name for name in own if name not in plan.name_set]:
        del own[name]
        if type(name) is str and name not in plan.extras and \
                not _is_data_descriptor(_lookup(plan.cls, name)):
            plan.extras.append(name)
