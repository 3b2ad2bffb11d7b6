"""Converting objects to another class: one object (:func:`updateToClass`) or all of a batch
(:func:`transform_all`), and the journal operations that undo it.

:func:`updateToClass` converts one object: by ``__class__`` assignment where the layouts agree;
otherwise by building a new object of the new class and redirecting every reference to the old
one (:mod:`~pymoult.lowlevel.redirection`, which reports what it could not redirect). The
object's own state (class, attributes, slots) is saved before the transformer runs
(:mod:`~pymoult.lowlevel.object_state`), so a rollback restores it exactly whatever the
transformer wrote and however (``setattr``, ``vars(obj)``, ``object.__setattr__``), and whatever
it raised (a ``BaseException`` is re-raised as itself once the object is restored); changes it
makes inside *other* objects are not saved.

Assigning ``obj.__class__`` has a cost on 3.11+: it turns the object's inline attribute values
into a dict, and its attribute reads then cost about 3x as much for the rest of its life
(measured: 3.05x on 3.11, 3.50x on 3.12, 3.66x on 3.13; no change on 3.10). Updating the class
in place (:func:`~pymoult.lowlevel.class_update.redefineClass`) avoids it.

:func:`transform_all` runs a transformer on many objects, atomically by default (an eager
update's, a class redefinition's); :class:`AttributeWrites` and :func:`snapshot_entry` record a
lazy conversion's writes (:mod:`~pymoult.lowlevel.lazy_conversion`).
"""

from __future__ import annotations

import logging
import operator
import types
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .. import _cpython
from ..errors import ConversionError, PymoultTypeError, TransformerError
from .journal import MISSING, Operation, current_journal, describe
from .object_state import ObjectStates
from .redirection import redirect_references

if TYPE_CHECKING:
    from .journal import Journal
    from .redirection import RedirectReport

__all__ = ["updateToClass", "transform_all", "snapshot_entry", "SetClass", "AttributeWrites",
           "Conversion", "PROGRESS_BATCH"]

logger = logging.getLogger("pymoult")

T = TypeVar("T")

#: A transformer: called on each converted object, its result ignored.
Transformer = Callable[[Any], object]
#: A builder: makes the new object standing for the old one.
Builder = Callable[[Any], Any]
#: What :class:`AttributeWrites` records: ``(obj, name, old value or MISSING)``, or
#: ``(obj, None, {"__dict__": copy, slot: value})`` for an object snapshotted whole.
WriteEntry = tuple[Any, str | None, Any]


class SetClass(Operation):
    """``obj.__class__`` was assigned; undo assigns the old class back."""

    def __init__(self, obj: object, old_cls: type, new_cls: type) -> None:
        self.obj, self.old_cls, self.new_cls = obj, old_cls, new_cls
        self.text = f"convert a {describe(old_cls)} to {describe(new_cls)}"

    def undo(self) -> None:
        object.__setattr__(self.obj, "__class__", self.old_cls)


class AttributeWrites(Operation):
    """Attribute writes and deletions made on objects (a lazy conversion's), recorded as
    ``(obj, name, old value or MISSING)``, or ``(obj, None, {"__dict__": copy, slot: value})``
    for an object snapshotted whole; undo restores them newest first."""

    def __init__(self, description: str) -> None:
        self.entries: list[WriteEntry] = []
        self.description = description

    @property
    def text(self) -> str:  # type: ignore[override]  # counts change as writes are recorded
        objects = len({id(entry[0]) for entry in self.entries})
        return f"{self.description}: {len(self.entries)} recorded changes on {objects} objects"

    def undo(self) -> None:
        for obj, name, old in reversed(self.entries):
            if name is None:
                for key, value in old.items():
                    if key == "__dict__":
                        state = object.__getattribute__(obj, "__dict__")
                        state.clear()
                        state.update(value)
                    else:
                        _restore_attribute(obj, key, value)
            else:
                _restore_attribute(obj, name, old)


def _restore_attribute(obj: object, name: str, value: object) -> None:
    """Put back ``value`` (or remove the attribute when it was MISSING), bypassing hooks."""
    if value is MISSING:
        try:
            object.__delattr__(obj, name)
        except AttributeError:
            pass
    else:
        object.__setattr__(obj, name, value)


class Conversion(Operation):
    """Objects replaced by new ones of another layout, references redirected (each redirection
    is an operation of its own, recorded after this one). ``report`` says what was missed."""

    def __init__(self, old: object, new: object, report: RedirectReport, count: int = 1) -> None:
        self.old, self.new, self.report, self.count = old, new, report, count
        old_cls = old if isinstance(old, type) else type(old)
        new_cls = new if isinstance(new, type) else type(new)
        what = f"a {describe(old_cls)}" if count == 1 else f"{count} {describe(old_cls)} objects"
        self.text = (f"replace {what} by {describe(new_cls)} ({len(report.redirected)} references "
                     f"redirected, {len(report.missed)} not)")

    def undo(self) -> None:
        pass  # the redirections recorded after it put the old objects back


_SKIP: Final = object()  # a property: its setter's own writes are recorded, not the property


_PLAIN, _SLOT, _SHADOWED = "plain", "slot", "shadowed"


def _attribute_kind(cls: type, name: str) -> object:
    """How to read an instance's own value for ``name``: it depends on the class only."""
    on_class = getattr(cls, name, MISSING)
    if on_class is MISSING:
        return _PLAIN  # nothing on the class: whatever getattr finds is the instance's
    if isinstance(on_class, property):
        return _SKIP
    if isinstance(on_class, types.MemberDescriptorType):
        return _SLOT
    return _SHADOWED  # a class attribute of that name: look in the instance dict only


def _instance_value(obj: object, name: str, kind: object = None) -> Any:
    """The value ``obj`` itself holds for ``name`` (instance dict or slot), MISSING if none,
    without running getters or seeing class defaults (``_SKIP`` for a property)."""
    kind = kind or _attribute_kind(type(obj), name)
    if kind is _PLAIN:
        return getattr(obj, name, MISSING)
    if kind is _SLOT:
        try:
            return object.__getattribute__(obj, name)
        except AttributeError:
            return MISSING
    if kind is _SKIP:
        return _SKIP
    state = getattr(obj, "__dict__", None)
    return state.get(name, MISSING) if isinstance(state, dict) else MISSING


def snapshot_entry(obj: object) -> WriteEntry:
    """``(obj, None, state)`` restoring all of ``obj``'s own attributes (dict and slots)."""
    state: dict[str, Any] = {}
    own = getattr(obj, "__dict__", None)
    if isinstance(own, dict):
        state["__dict__"] = dict(own)
    for name in slots_of(type(obj)):
        if name not in ("__dict__", "__weakref__"):
            state[name] = _instance_value(obj, name)
    return (obj, None, state)



#: Objects handled between two progress reports (``Journal.report_progress``), and saved at once
#: by an atomic :func:`transform_all` before the transformer runs on them: a fraction of a
#: millisecond of work, so that the report's cost vanishes and a watcher still sees it move.
#: Saving a batch reads each object four times (its type, its attributes, its referents, the
#: types of its values), then the transformer reads it again: the batch must stay in the
#: core's level-2 cache (512 KiB on this project's machines) meanwhile. 1024 plain objects with
#: their attribute values and the saved columns take under 200 KiB; 4096 took more than the
#: cache holds (cachegrind, 100,000 one-attribute objects, a 512 KiB cache: 28 level-2 misses
#: an object for an atomic eager update in batches of 4096, 15 in batches of 1024, 14 of 512,
#: 12.9 with nothing saved).
PROGRESS_BATCH = 1024


def in_batches(objects: Sequence[T], progress: Journal | None,
               step: str) -> Iterator[tuple[int, Sequence[T]]]:
    """``objects`` (a sequence) in batches of ``PROGRESS_BATCH``: yields ``(start, batch)``, a
    slice each, and reports to journal ``progress`` (if any) how many were handled after each."""
    total = len(objects)
    if progress is not None:
        progress.report_progress(step, 0, total)
    for start in range(0, total, PROGRESS_BATCH):
        stop = min(start + PROGRESS_BATCH, total)
        yield start, objects[start:stop]
        if progress is not None:
            progress.report_progress(step, stop, total)


def transform_all(objects: Sequence[Any], transformer: Transformer, description: str,
                  atomic: bool = True, progress: Journal | None = None) -> ObjectStates:
    """Run ``transformer`` on each object; returns the :class:`ObjectStates` saved before.

    With ``atomic``, each batch of ``PROGRESS_BATCH`` objects has its state saved before the
    transformer runs on it (see :mod:`~pymoult.lowlevel.object_state`: whatever the transformer
    writes, and however, is restorable), and a failure on the k-th object restores the ones
    before it: an ``Exception`` is then raised as ``TransformerError``, any other
    ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``, a cancellation) as itself. How many
    objects are done is reported to journal ``progress`` (if given) after each batch.

    The cyclic collector is paused meanwhile (``pymoult._cpython.pause_gc``) and put back as it
    was (enabled or not) however this returns: a transformer that allocates containers (a dict
    per object, say) would otherwise set off a collection every few hundred objects, and every
    so often a full one that traverses the whole program. What it allocated is collected at the
    first collection after. A batch is saved then converted at once: still in the CPU caches
    when the transformer reads it.
    """
    states = ObjectStates(description)
    if not isinstance(objects, (list, tuple)):
        objects = list(objects)  # batches whose iterators say how far they went (below)
    index = -1
    try:
        with _cpython.pause_gc():  # see above; the undo below runs with the collector on
            for start, batch in in_batches(objects, progress, description):
                if atomic:
                    states.take(batch)
                # a bare loop: enumerate cost 20-30 ns an object (3.11, 3.12), a fifth of a
                # one-line transformer's own cost; the failing object's index is worked out
                # from how many objects the batch's iterator has left
                remaining = iter(batch)
                try:
                    for obj in remaining:
                        transformer(obj)
                except BaseException:
                    index = start + len(batch) - 1 - operator.length_hint(remaining)
                    raise
                index = start + len(batch) - 1
    except BaseException as exc:
        if atomic:
            states.undo()
        if not isinstance(exc, Exception):
            logger.warning("transformer %s was interrupted by %r on object %d of %d; the objects "
                           "before it were %s", describe(transformer), exc, index + 1,
                           len(objects), "restored" if atomic else "left converted")
            raise
        done = "restored" if atomic else "left converted"
        raise TransformerError(
            f"transformer {describe(transformer)} raised {exc!r} on object {index + 1} of "
            f"{len(objects)} ({describe(type(objects[index]))}); the {index} before it were "
            f"{done}", obj=objects[index], index=index, count=len(objects)) from exc
    return states


def check_class(cls: object, what: str) -> None:
    """Raise ``PymoultTypeError`` (naming ``what``) unless ``cls`` is a class."""
    if not isinstance(cls, type):
        raise PymoultTypeError(f"{what} must be a class, got {cls!r}")


def slots_of(cls: type) -> tuple[str, ...]:
    """The ``__slots__`` entries of ``cls`` and its bases, as written (not mangled)."""
    slots: list[str] = []
    for klass in cls.__mro__:
        value = klass.__dict__.get("__slots__", ())
        slots.extend([value] if isinstance(value, str) else value)
    return tuple(slots)


def _copy_state(old: object, new: object, new_cls: type) -> None:
    """Copy the old object's attributes onto ``new`` wherever ``new_cls`` can hold them."""
    values: dict[str, Any] = {}
    for name in slots_of(type(old)):
        if name not in ("__dict__", "__weakref__"):
            try:
                values[name] = object.__getattribute__(old, name)
            except AttributeError:
                pass
    try:  # not hasattr: that would run the class's own __getattr__, maybe already updated
        values.update(object.__getattribute__(old, "__dict__"))
    except AttributeError:
        pass
    for name, value in values.items():
        try:
            object.__setattr__(new, name, value)
        except AttributeError as exc:
            raise ConversionError(
                f"cannot convert {describe(type(old))} to {describe(new_cls)}: the new class has "
                f"no place for attribute {name!r} (pass a builder that makes the new object)",
                obj=old, new_cls=new_cls) from exc


def updateToClass(obj: Any, cls: type, new_cls: type, transformer: Transformer | None = None,
                  journal: Journal | None = None, builder: Builder | None = None) -> Any:
    """Convert ``obj`` (an instance of ``cls``) to ``new_cls``, then run ``transformer`` on it once.

    Returns the converted object: ``obj`` itself when ``__class__`` can be assigned; otherwise a
    new object, made by ``builder(obj)`` if given (needed when ``new_cls.__new__`` takes
    arguments: a namedtuple-like class) or as a blank ``new_cls`` given ``obj``'s attributes, to
    which every reference to ``obj`` is redirected. What could not be redirected is logged and
    kept in the journal's ``Conversion`` operation (its ``report``). A failing transformer leaves
    ``obj`` exactly as it was and raises ``TransformerError``.
    """
    check_class(cls, "cls")
    check_class(new_cls, "new_cls")
    if not isinstance(obj, cls):
        raise PymoultTypeError(f"{obj!r} is not an instance of {describe(cls)}")
    for label, function in (("transformer", transformer), ("builder", builder)):
        if function is not None and not callable(function):
            raise PymoultTypeError(f"{label} must be callable, got {function!r}")
    journal = current_journal(journal)
    old_cls = type(obj)
    states = ObjectStates(f"transform to {describe(new_cls)}")
    if transformer is not None:
        states.take([obj])  # before the class changes: undo restores the class too
    try:
        object.__setattr__(obj, "__class__", new_cls)  # also for frozen dataclasses
    except TypeError:
        return _convert_by_rebuilding(obj, new_cls, transformer, builder, journal)
    if transformer is not None:
        try:
            transformer(obj)
        except BaseException as exc:
            states.undo()
            object.__setattr__(obj, "__class__", old_cls)
            if not isinstance(exc, Exception):
                raise
            raise TransformerError(f"transformer {describe(transformer)} raised {exc!r} "
                                   f"converting a {describe(old_cls)}", obj=obj, index=0,
                                   count=1) from exc
    if journal is not None:
        journal.record(SetClass(obj, old_cls, new_cls))
        if len(states):
            journal.record(states)
    return obj


def _transformer_failed(transformer: Callable[..., object], exc: Exception, doing: str,
                        obj: object) -> TransformerError:
    # a function, not a closure: a cell holding the old object would be redirected with the rest
    return TransformerError(f"transformer {describe(transformer)} raised {exc!r} {doing}",
                            obj=obj, index=0, count=1)


def build_new(old: Any, new_cls: type, transformer: Transformer | None,
              builder: Builder | None) -> Any:
    """A ``new_cls`` object standing for ``old``: ``builder(old)``, or a blank ``new_cls`` given
    the old attributes; then ``transformer(new)``, once."""
    if builder is not None:
        try:
            new = builder(old)
        except Exception as exc:
            raise _transformer_failed(builder, exc, f"building a {describe(new_cls)}", old) from exc
        if not isinstance(new, new_cls):
            raise ConversionError(f"builder {describe(builder)} returned {new!r}, not a "
                                  f"{describe(new_cls)}", obj=old, new_cls=new_cls)
    else:
        try:
            # new_cls's own __new__ (mypy reads it as type.__new__, the metaclass's)
            new = new_cls.__new__(new_cls)  # type: ignore[call-overload]
        except TypeError as exc:
            raise ConversionError(
                f"cannot build a {describe(new_cls)} from a {describe(type(old))}: its __new__ "
                "needs arguments (pass a builder that returns the new object)",
                obj=old, new_cls=new_cls) from exc
        _copy_state(old, new, new_cls)
    if transformer is not None:
        try:
            transformer(new)
        except Exception as exc:
            raise _transformer_failed(transformer, exc, f"converting a {describe(type(old))}",
                                      old) from exc
    return new


def _convert_by_rebuilding(old: Any, new_cls: type, transformer: Transformer | None,
                           builder: Builder | None, journal: Journal | None) -> Any:
    new = build_new(old, new_cls, transformer, builder)
    mark = len(journal) if journal is not None else 0
    report = redirect_references({id(old): (old, new)}, journal)
    if journal is not None:
        journal.operations.insert(mark, Conversion(old, new, report))
    if not report.complete:
        logger.warning("converted a %s to %s; some references still point at the old object:\n%s",
                       describe(type(old)), describe(new_cls), report)
    return new
