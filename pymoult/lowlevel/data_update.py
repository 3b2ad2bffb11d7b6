"""Updating data: classes, objects, and local variables of live frames.

Classes
-------
:func:`redefineClass` keeps the class object's identity: when the instance layout allows (same
``__slots__``, metaclass and bases), the live class's namespace is updated in place, methods
through :mod:`~pymoult.lowlevel.relinking` so that bound methods follow. ``isinstance``,
pickling, registries and every existing instance keep working, with no per-object work. This is
also the fast path on 3.11+, for a CPython reason: assigning ``obj.__class__`` turns the object's
inline attribute values into a dict, and its attribute reads then cost about 3x as much for the
rest of its life (measured: 3.05x on 3.11, 3.50x on 3.12, 3.66x on 3.13; no change on 3.10).

Objects
-------
:func:`updateToClass` converts one object: by ``__class__`` assignment where the layouts agree;
otherwise by building a new object of the new class and redirecting every reference to the old
one (:mod:`~pymoult.lowlevel.redirection`, which reports what it could not redirect). The
object's own state (class, attributes, slots) is saved before the transformer runs
(:mod:`~pymoult.lowlevel.object_state`), so a rollback restores it exactly whatever the
transformer wrote and however (``setattr``, ``vars(obj)``, ``object.__setattr__``), and whatever
it raised (a ``BaseException`` is re-raised as itself once the object is restored); changes it
makes inside *other* objects are not saved.

Local variables
---------------
:func:`updateLocalVarInThread` and :func:`updateLocalVar` change a local variable of frames that
are running in other threads, whether those threads are running Python, parked at an update
point, or blocked in ``time.sleep``, ``Event.wait`` or I/O (the new value is there when the call
returns). The frames are found on the threads' stacks and written inside a stop-the-world window,
so the thread sees the write between two bytecodes, never half-way. The mechanism differs by
version (``pymoult._cpython.write_frame_local``): a write-through ``f_locals`` on 3.13, a
snapshot copied back with ``PyFrame_LocalsToFast`` before.

Limits: only existing local names can be written (arguments, assigned locals, cell and free
variables; deleting a local is not offered: CPython versions disagree on it). A ``for`` loop
variable changes for the current iteration only (the iterator sets the next value). Frames of a
suspended generator or greenlet are not on any thread's stack and are not reached.
"""

import enum
import logging
import sys
import threading
import types

from .. import _cpython
from ..errors import (ConversionError, PymoultTypeError, PymoultValueError, RedefinitionError,
                      TargetNotFoundError, TransformerError)
from .._stacks import codes_of
from .journal import (MISSING, Journal, Operation, current_journal, delete_attribute, describe,
                      set_attribute)
from .instances import instances_of
from .object_state import ObjectStates
from .redirection import redirect_references
from .relinking import copy_missing_globals, property_for, rebuild, redefineMethod
from .world import stop_the_world

__all__ = [
    "redefineClass",
    "updateToClass",
    "addFieldToClass",
    "addMethodToClass",
    "generateMixinUser",
    "applyMixinToObject",
    "updateLocalVar",
    "updateLocalVarInThread",
    "transform_all",
    "SetClass",
    "AttributeWrites",
    "Conversion",
    "WriteLocal",
]

logger = logging.getLogger("pymoult")

# names a class namespace always has, which an update never copies or deletes
_NAMESPACE_SKIP = {"__dict__", "__weakref__", "__module__", "__qualname__", "__slots__"}


class SetClass(Operation):
    """``obj.__class__`` was assigned; undo assigns the old class back."""

    def __init__(self, obj, old_cls, new_cls):
        self.obj, self.old_cls, self.new_cls = obj, old_cls, new_cls
        self.text = f"convert a {describe(old_cls)} to {describe(new_cls)}"

    def undo(self):
        object.__setattr__(self.obj, "__class__", self.old_cls)


class AttributeWrites(Operation):
    """Attribute writes and deletions made on objects (a lazy conversion's), recorded as
    ``(obj, name, old value or MISSING)``, or ``(obj, None, {"__dict__": copy, slot: value})``
    for an object snapshotted whole; undo restores them newest first."""

    def __init__(self, description):
        self.entries = []
        self.description = description

    @property
    def text(self):
        objects = len({id(entry[0]) for entry in self.entries})
        return f"{self.description}: {len(self.entries)} recorded changes on {objects} objects"

    def undo(self):
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


def _restore_attribute(obj, name, value):
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

    def __init__(self, old, new, report, count=1):
        self.old, self.new, self.report, self.count = old, new, report, count
        old_cls = old if isinstance(old, type) else type(old)
        new_cls = new if isinstance(new, type) else type(new)
        what = f"a {describe(old_cls)}" if count == 1 else f"{count} {describe(old_cls)} objects"
        self.text = (f"replace {what} by {describe(new_cls)} ({len(report.redirected)} references "
                     f"redirected, {len(report.missed)} not)")

    def undo(self):
        pass  # the redirections recorded after it put the old objects back


_SKIP = object()  # a property: its setter's own writes are recorded, not the property


_PLAIN, _SLOT, _SHADOWED = "plain", "slot", "shadowed"


def _attribute_kind(cls, name):
    """How to read an instance's own value for ``name``: it depends on the class only."""
    on_class = getattr(cls, name, MISSING)
    if on_class is MISSING:
        return _PLAIN  # nothing on the class: whatever getattr finds is the instance's
    if isinstance(on_class, property):
        return _SKIP
    if isinstance(on_class, types.MemberDescriptorType):
        return _SLOT
    return _SHADOWED  # a class attribute of that name: look in the instance dict only


def _instance_value(obj, name, kind=None):
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


def snapshot_entry(obj):
    """``(obj, None, state)`` restoring all of ``obj``'s own attributes (dict and slots)."""
    state = {}
    own = getattr(obj, "__dict__", None)
    if isinstance(own, dict):
        state["__dict__"] = dict(own)
    for name in _slots_of(type(obj)):
        if name not in ("__dict__", "__weakref__"):
            state[name] = _instance_value(obj, name)
    return (obj, None, state)


#: Objects handled between two progress reports (``Journal.report_progress``): a few
#: milliseconds of work, so that the report's cost vanishes and a watcher still sees it move.
PROGRESS_BATCH = 4096


def _in_batches(objects, progress, step):
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


def transform_all(objects, transformer, description, atomic=True, progress=None):
    """Run ``transformer`` on each object; returns the :class:`ObjectStates` saved before.

    With ``atomic``, each batch of ``PROGRESS_BATCH`` objects has its state saved before the
    transformer runs on it (see :mod:`~pymoult.lowlevel.object_state`: whatever the transformer
    writes, and however, is restorable), and a failure on the k-th object restores the ones
    before it: an ``Exception`` is then raised as ``TransformerError``, any other
    ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``, a cancellation) as itself. How many
    objects are done is reported to journal ``progress`` (if given) after each batch.

    The cyclic collector is paused meanwhile (``pymoult._cpython.pause_gc``) and put back as it
    was (enabled or not) however this returns: a transformer that allocates containers (a dict per object, say) would
    otherwise set off a collection every few hundred objects, and every so often a full one
    that traverses the whole program. What it allocated is collected at the first collection
    after. A batch is saved then converted at once: still in the CPU caches when the
    transformer reads it.
    """
    states = ObjectStates(description)
    index = -1
    try:
        with _cpython.pause_gc():  # see above; the undo below runs with the collector on
            for start, batch in _in_batches(objects, progress, description):
                if atomic:
                    states.take(batch)
                for index, obj in enumerate(batch, start):
                    transformer(obj)
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


def _check_class(cls, what):
    if not isinstance(cls, type):
        raise PymoultTypeError(f"{what} must be a class, got {cls!r}")


def addFieldToClass(cls, name, field, journal=None):
    """Give ``cls`` the class attribute ``name = field`` (a default every instance sees)."""
    _check_class(cls, "the class")
    set_attribute(cls, name, field, journal)


def addMethodToClass(cls, name, method, journal=None):
    """Give ``cls`` the method ``name``. A function using zero-argument ``super()`` is bound to
    ``cls`` (its ``__class__`` cell), whatever class body it was written in."""
    _check_class(cls, "the class")
    wrapped = isinstance(method, (staticmethod, classmethod))
    function = method.__func__ if wrapped else method
    if not callable(function) and not isinstance(method, property):
        raise PymoultTypeError(f"a method must be callable, got {method!r}")
    if isinstance(function, types.FunctionType) and "__class__" in function.__code__.co_freevars:
        rebuilt = rebuild(function, function.__globals__, cls)
        method = type(method)(rebuilt) if wrapped else rebuilt
    set_attribute(cls, name, method, journal)


def generateMixinUser(cls, *mixins):
    """A subclass of ``cls`` that also inherits ``mixins`` (their methods take precedence).

    It keeps ``cls``'s name, qualified name and module, so it reads like the class it extends.
    """
    _check_class(cls, "the class")
    if not mixins:
        raise PymoultValueError("generateMixinUser needs at least one mixin")
    for mixin in mixins:
        _check_class(mixin, "a mixin")
    namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return type(cls)(cls.__name__, tuple(mixins) + (cls,), namespace)


def applyMixinToObject(obj, *mixins, journal=None):
    """Make ``obj`` an instance of ``generateMixinUser(type(obj), *mixins)``; returns that class.

    This assigns ``obj.__class__`` (see the module notes for what that costs on 3.11+).
    """
    new_cls = generateMixinUser(type(obj), *mixins)
    updateToClass(obj, type(obj), new_cls, journal=journal)
    return new_cls


def _slots_of(cls):
    slots = []
    for klass in cls.__mro__:
        value = klass.__dict__.get("__slots__", ())
        slots.extend([value] if isinstance(value, str) else value)
    return tuple(slots)


def _layout(cls):
    """What must agree for a class to be updated in place from another."""
    return (type(cls), _slots_of(cls), cls.__basicsize__, cls.__itemsize__, cls.__dictoffset__)


def _same_class(live, new, counterparts):
    """True when ``new`` stands for ``live``: the same object, or its new version. Without
    ``counterparts`` (id of a new class -> the live class it updates), a class of the same
    qualified name counts as its new version."""
    if live is new:
        return True
    if counterparts is not None:
        return counterparts.get(id(new)) is live
    return live.__qualname__ == new.__qualname__


def updatable_in_place(cls, new_cls, counterparts=None):
    """True when ``cls`` can take ``new_cls``'s namespace: same instance layout, the same
    metaclass (or its new version), and the same bases (or their new versions)."""
    if _layout(cls)[1:] != _layout(new_cls)[1:]:
        return False
    if type(cls) is not type(new_cls) and not (
            counterparts is not None and counterparts.get(id(type(new_cls))) is type(cls)):
        return False
    if len(cls.__bases__) != len(new_cls.__bases__):
        return False
    return all(_same_class(live, new, counterparts)
               for live, new in zip(cls.__bases__, new_cls.__bases__))


def _is_function_like(value):
    return isinstance(value, (types.FunctionType, staticmethod, classmethod, property))


def redefineClass(module, cls, new_cls, transformer=None, builder=None, journal=None,
                  counterparts=None, keep=()):
    """Make ``module.<cls>`` behave as ``new_cls``; returns the class now bound in the module.

    When the instance layout (slots, metaclass) and the bases allow, the live class is kept: its
    namespace is updated in place (methods through ``redefineMethod``, so bound methods follow;
    new methods that use ``super()`` are bound to the live class), and its instances keep their
    identity, ``isinstance`` and pickling with no per-object work. ``transformer(obj)``, if
    given, then runs on every instance (recorded, like an atomic eager update).

    Otherwise the class must be replaced: every instance is rebuilt as a ``new_cls`` (by
    ``builder(old)``, or a blank ``new_cls`` given the old attributes) and the transformer runs
    once on each new object; all are built before anything changes (a failure raises
    ``TransformerError``/``ConversionError`` with nothing changed), then the name is rebound and
    every reference to the old instances is redirected in one heap scan. What could not be
    redirected, and subclasses still deriving from the old class, are logged and kept in the
    journal's ``Conversion`` operation.

    An ``Enum`` updated in place keeps its members (same objects, same values: an existing
    member whose value changed in the new version keeps its old one, logged); members the new
    version adds become members of the live class; members it drops are kept.

    Bases and metaclass must be the live ones or "the same class": by default one of the same
    qualified name; with ``counterparts`` (id of a new class -> the live class it stands for,
    as a module update knows them) only those. ``keep`` names class attributes an in-place
    update leaves as they are (class-level state).
    """
    if not isinstance(module, types.ModuleType):
        raise PymoultTypeError(f"expected a module, got {module!r}")
    name = cls if isinstance(cls, str) else getattr(cls, "__name__", None)
    live = module.__dict__.get(name, MISSING) if isinstance(name, str) else MISSING
    if live is MISSING:
        raise TargetNotFoundError(f"module {module.__name__!r} has no class {name!r} (any more)",
                                  target=f"{module.__name__}.{name}")
    if not isinstance(cls, str) and live is not cls:
        raise TargetNotFoundError(f"{module.__name__}.{name} is no longer {cls!r}",
                                  target=f"{module.__name__}.{name}")
    _check_class(live, f"{module.__name__}.{name}")
    _check_class(new_cls, "the new version")
    for label, function in (("transformer", transformer), ("builder", builder)):
        if function is not None and not callable(function):
            raise PymoultTypeError(f"{label} must be callable, got {function!r}")
    journal = current_journal(journal)
    if updatable_in_place(live, new_cls, counterparts):
        own = Journal(f"redefine {describe(live)}")  # so that a failure changes nothing
        try:
            with own.recording():
                if isinstance(live, enum.EnumMeta) and isinstance(new_cls, enum.EnumMeta):
                    _update_enum(live, new_cls, own, keep)
                else:
                    _update_namespace(live, new_cls, own, keep)
                if transformer is not None:
                    own.record(transform_all(instances_of(live), transformer,
                                             f"transform instances of {describe(live)}",
                                             progress=journal))
            if journal is not None:
                journal.adopt(own)  # all at once: a failure leaves them all to own.rollback()
        except BaseException:
            own.rollback()
            raise
        return live
    return _replace_class(module, name, live, new_cls, transformer, builder, journal)


def _replace_class(module, name, live, new_cls, transformer, builder, journal):
    olds = instances_of(live, subclasses=False)
    mapping = {}
    # build everything first: a failure changes nothing
    for start, batch in _in_batches(olds, journal, f"rebuild instances of {describe(live)}"):
        for index, old in enumerate(batch, start):
            try:
                new = _build_new(old, new_cls, transformer, builder)
            except TransformerError as exc:
                exc.index, exc.count = index, len(olds)
                raise
            mapping[id(old)] = (old, new)
    set_attribute(module, name, new_cls, journal)
    mark = len(journal) if journal is not None else 0
    report = redirect_references(mapping, journal, exclude=(olds,))
    for subclass in type.__subclasses__(live):
        report.missed.append(f"subclass {describe(subclass)} still derives from the old class")
    report.missed.append(f"the class object {describe(live)} itself: code that holds it (a "
                         "`from module import` elsewhere, an isinstance check) still names it")
    if journal is not None:
        journal.operations.insert(mark, Conversion(live, new_cls, report, count=len(olds)))
    if not report.complete:
        logger.warning("replaced class %s by %s (%d instances); not everything followed:\n%s",
                       describe(live), describe(new_cls), len(olds), report)
    return new_cls


def _update_namespace(live, new_cls, journal, keep=()):
    # slot descriptors belong to their own class's layout: the live ones stay (same slots)
    skip = _NAMESPACE_SKIP | set(_slots_of(live)) | set(_slots_of(new_cls)) | set(keep)
    old_names = set(live.__dict__) - skip
    new_names = set(new_cls.__dict__) - skip
    live_module = sys.modules.get(live.__module__)
    for name in sorted(new_names):
        value = new_cls.__dict__[name]
        current = live.__dict__.get(name, MISSING)
        if name == "__doc__":
            if current != value:
                set_attribute(live, name, value, journal)
            continue
        if isinstance(current, type) and isinstance(value, type) and \
                current.__qualname__ == value.__qualname__ and updatable_in_place(current, value):
            # a nested class: updated in place too, so its instances keep working
            if isinstance(current, enum.EnumMeta) and isinstance(value, enum.EnumMeta):
                _update_enum(current, value, journal)
            else:
                _update_namespace(current, value, journal)
            continue
        if current is not MISSING and _is_function_like(current) and _is_function_like(value):
            try:
                redefineMethod(live, name, value, fallback="rebind", journal=journal)
                continue
            except RedefinitionError:
                pass  # a property replaced by a method, say: set it below
        if isinstance(value, property):
            value = property_for(live, value)
        elif isinstance(value, (types.FunctionType, staticmethod, classmethod)):
            wrapped = not isinstance(value, types.FunctionType)
            function = value.__func__ if wrapped else value
            if isinstance(function, types.FunctionType):
                home = live_module.__dict__ if live_module is not None else function.__globals__
                rebuilt = rebuild(function, home, live)
                rebuilt.__code__ = copy_missing_globals(rebuilt, function, journal)
                value = type(value)(rebuilt) if wrapped else rebuilt
        set_attribute(live, name, value, journal)
    for name in sorted(old_names - new_names - {"__doc__"}):
        delete_attribute(live, name, journal)


class AddEnumMember(Operation):
    """A member (or an alias of one, ``name``) added to a live ``Enum`` class; undo removes it."""

    def __init__(self, cls, member, name=None):
        self.cls, self.member = cls, member
        self.name = name or member._name_
        self.text = f"add member {self.name} to {describe(cls)}"

    def undo(self):
        cls, name = self.cls, self.name
        cls._member_map_.pop(name, None)
        if name != self.member._name_:  # an alias: the member itself stays
            if cls.__dict__.get(name) is self.member:
                type.__delattr__(cls, name)
            return
        if name in cls._member_names_:
            cls._member_names_.remove(name)
        try:
            if cls._value2member_map_.get(self.member._value_) is self.member:
                del cls._value2member_map_[self.member._value_]
        except TypeError:  # an unhashable value
            pass
        if cls.__dict__.get(name) is self.member:
            type.__delattr__(cls, name)


def _is_sunder(name):
    return len(name) > 2 and name[0] == name[-1] == "_" and name[1] != "_" and name[-2] != "_"


def _update_enum(live, new_cls, journal, keep=()):
    """Update an Enum in place: methods as for any class; members kept, new ones added."""
    members = set(live._member_map_) | set(new_cls._member_map_)
    internal = {name for name, value in vars(new_cls).items()
                if name == "__new__" or (_is_sunder(name) and not _is_function_like(value))}
    _update_namespace(live, new_cls, journal, keep=members | internal | set(keep))
    aliases = []
    for name, member in new_cls._member_map_.items():
        if name in live._member_map_:
            if live._member_map_[name]._value_ != member._value_:
                logger.warning("%s.%s keeps its value %r (the new version gives it %r): existing "
                               "members keep their identity and value", describe(live), name,
                               live._member_map_[name]._value_, member._value_)
            continue
        if member._name_ != name:
            aliases.append((name, member._name_))  # added once its member is
            continue
        object.__setattr__(member, "__class__", live)
        journal.record(AddEnumMember(live, member))  # first: its undo tolerates a part done
        live._member_map_[name] = member
        live._member_names_.append(name)
        try:
            live._value2member_map_.setdefault(member._value_, member)
        except TypeError:  # an unhashable value: found by a scan, as Enum does
            pass
        type.__setattr__(live, name, member)
    for alias, canonical in aliases:
        member = live._member_map_.get(canonical)
        if member is not None:
            journal.record(AddEnumMember(live, member, alias))
            live._member_map_[alias] = member
            type.__setattr__(live, alias, member)
    dropped = set(live._member_map_) - set(new_cls._member_map_)
    if dropped:
        logger.warning("%s keeps members %s that the new version drops (code may still hold "
                       "them)", describe(live), ", ".join(sorted(dropped)))


def _copy_state(old, new, new_cls):
    """Copy the old object's attributes onto ``new`` wherever ``new_cls`` can hold them."""
    values = {}
    for name in _slots_of(type(old)):
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


def updateToClass(obj, cls, new_cls, transformer=None, journal=None, builder=None):
    """Convert ``obj`` (an instance of ``cls``) to ``new_cls``, then run ``transformer`` on it once.

    Returns the converted object: ``obj`` itself when ``__class__`` can be assigned; otherwise a
    new object, made by ``builder(obj)`` if given (needed when ``new_cls.__new__`` takes
    arguments: a namedtuple-like class) or as a blank ``new_cls`` given ``obj``'s attributes, to
    which every reference to ``obj`` is redirected. What could not be redirected is logged and
    kept in the journal's ``Conversion`` operation (its ``report``). A failing transformer leaves
    ``obj`` exactly as it was and raises ``TransformerError``.
    """
    _check_class(cls, "cls")
    _check_class(new_cls, "new_cls")
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


def _transformer_failed(transformer, exc, doing, obj):
    # a function, not a closure: a cell holding the old object would be redirected with the rest
    return TransformerError(f"transformer {describe(transformer)} raised {exc!r} {doing}",
                            obj=obj, index=0, count=1)


def _build_new(old, new_cls, transformer, builder):
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
            new = new_cls.__new__(new_cls)
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


def _convert_by_rebuilding(old, new_cls, transformer, builder, journal):
    new = _build_new(old, new_cls, transformer, builder)
    mark = len(journal) if journal is not None else 0
    report = redirect_references({id(old): (old, new)}, journal)
    if journal is not None:
        journal.operations.insert(mark, Conversion(old, new, report))
    if not report.complete:
        logger.warning("converted a %s to %s; some references still point at the old object:\n%s",
                       describe(type(old)), describe(new_cls), report)
    return new


def _frame_is_running(frame):
    for top in _cpython.current_frames().values():
        while top is not None:
            if top is frame:
                return True
            top = top.f_back
    return False


class WriteLocal(Operation):
    """A local variable of a live frame was set; undo writes the old value back if the frame is
    still running (a frame that has exited has no state left to restore)."""

    def __init__(self, frame, name, old, new, thread):
        self.frame, self.name, self.old, self.new, self.thread = frame, name, old, new, thread
        was = "was unbound" if old is MISSING else f"was {old!r}"[:60]
        self.text = (f"set local {name!r} of {describe(frame.f_code)} in "
                     f"{getattr(thread, 'name', thread)!r} ({was})")

    def undo(self):
        if self.old is MISSING:
            raise PymoultValueError(f"local {self.name!r} was unbound before the update and "
                                    "cannot be unbound again portably; it keeps the new value")
        with stop_the_world():
            if _frame_is_running(self.frame):
                _cpython.write_frame_local(self.frame, self.name, self.old)


def _local_names(code):
    return set(code.co_varnames) | set(code.co_cellvars) | set(code.co_freevars)


def _check_name(codes, func, name):
    if not isinstance(name, str):
        raise PymoultTypeError(f"a local variable name must be a str, got {name!r}")
    for code in codes:
        if name in _local_names(code):
            return
    known = sorted(set().union(*(_local_names(code) for code in codes)))
    raise PymoultValueError(f"{describe(func)} has no local variable {name!r} (its locals: {known})")


def _write(frames, name, value, journal):
    """Write ``name`` in every (thread, frame); returns how many were written."""
    written = 0
    with stop_the_world():
        for thread, frame in frames:
            if not _frame_is_running(frame):
                continue
            old = frame.f_locals.get(name, MISSING)
            _cpython.write_frame_local(frame, name, value)
            if journal is not None:
                journal.record(WriteLocal(frame, name, old, value, thread))
            written += 1
    return written


def _frames_running(codes, thread_idents):
    """(thread, frame) for every frame of ``codes`` on the stacks of the given thread idents."""
    code_ids = {id(code) for code in codes}
    threads = {t.ident: t for t in threading.enumerate()}
    found = []
    for ident, frame in _cpython.current_frames().items():
        if ident not in thread_idents:
            continue
        while frame is not None:
            if id(frame.f_code) in code_ids:
                found.append((threads.get(ident, ident), frame))
            frame = frame.f_back
    return found


def updateLocalVarInThread(thread, func, name, value, journal=None):
    """Set local ``name`` to ``value`` in every frame of ``func`` running in ``thread``.

    Returns the number of frames written. Raises ``TargetNotFoundError`` if ``func`` is not
    running there (or its frames exit before the write), ``PymoultValueError`` if ``func`` has no
    such local.
    """
    if not isinstance(thread, threading.Thread):
        raise PymoultTypeError(f"expected a thread, got {thread!r}")
    codes = codes_of(func)
    _check_name(codes, func, name)
    written = _write(_frames_running(codes, {thread.ident}), name, value, current_journal(journal))
    if not written:
        raise TargetNotFoundError(f"{describe(func)} is not running in {thread.name!r}",
                                  target=func)
    return written


def updateLocalVar(func, name, value, journal=None):
    """Set local ``name`` to ``value`` in every frame of ``func`` in every *other* thread.

    Returns the number of frames written; ``TargetNotFoundError`` if none is running.
    """
    codes = codes_of(func)
    _check_name(codes, func, name)
    others = set(_cpython.current_frames()) - {threading.get_ident()}
    written = _write(_frames_running(codes, others), name, value, current_journal(journal))
    if not written:
        raise TargetNotFoundError(f"{describe(func)} is not running in any other thread",
                                  target=func)
    return written
