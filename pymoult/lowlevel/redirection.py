"""Redirecting references: make everything that points at old objects point at new ones.

When an object cannot be converted in place (its new class has another instance layout:
``__slots__`` changed, a builtin base, a namedtuple-like class), the update builds a new object
and then every reference to the old one must move to it. Pymoult named this ``redirectPointer``
and never implemented it. Here the holders of the old objects are found with one
``gc.get_referrers`` scan for the whole batch, and each kind of holder is rewritten:

- lists (items), dicts (values: instance ``__dict__``, module globals, ...), closure cells;
- objects whose attributes live in slots or in inline values (no dict object yet);
- frames running in other threads (their local variables), inside a stop-the-world window. The
  calling thread's own frames are left alone: the converter's variables keep their meaning.

What cannot be rewritten is *reported*, never hidden: weak references, tuples and frozensets
(immutable), dict
keys and set members (rehashing would change the container), suspended generators and
coroutines, temporaries on a running frame's value stack (not reported: invisible), references
held by C objects (a ``deque``, a ``functools.partial``...). Each rewrite is a journal
operation, so a rollback puts the old objects back everywhere.

Call it with the threads that use these objects parked (managers do): holders on the heap are
rewritten one by one, and a thread running meanwhile could copy an old reference that has already
been looked at. Only the frame rewrites run inside a stop-the-world window.
"""

from __future__ import annotations

import functools
import gc
import sys
import types
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .. import _cpython
from .journal import Journal, Operation, current_journal, describe
from .world import stop_the_world

__all__ = ["redirectPointer", "redirect_references", "RedirectReport"]

#: What to redirect: ``{id(old): (old, new)}``.
Redirections = Mapping[int, tuple[Any, Any]]


class RedirectReport:
    """What a redirection changed and what it could not: ``redirected`` and ``missed`` are lists
    of readable descriptions; ``complete`` is True when nothing was missed."""

    def __init__(self) -> None:
        self.redirected: list[str] = []
        self.missed: list[str] = []
        self.caveats: list[str] = []  # done, but without a guarantee the caller may rely on

    @property
    def complete(self) -> bool:
        return not self.missed

    def __repr__(self) -> str:
        return f"<RedirectReport redirected={len(self.redirected)} missed={len(self.missed)}>"

    def __str__(self) -> str:
        lines = [f"{len(self.redirected)} references redirected, {len(self.missed)} not"]
        lines += [f"  not redirected: {text}" for text in self.missed]
        lines += [f"  caveat: {text}" for text in self.caveats]
        return "\n".join(lines)


class _Rewrite(Operation):
    """One reference moved from an old object to a new one; undo moves it back."""

    def __init__(self, text: str, put_back: Callable[[], object]) -> None:
        self.text = text
        self._put_back = put_back

    def undo(self) -> None:
        self._put_back()


def _set_slot_or_attr(holder: object, name: str, value: object) -> None:
    object.__setattr__(holder, name, value)


def _slot_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


def redirect_references(mapping: Redirections, journal: Journal | None = None,
                        exclude: Collection[object] = ()) -> RedirectReport:
    """Point every reference to ``old`` at ``new`` for each ``old -> new`` in ``mapping``
    (a dict keyed by ``id(old)`` with ``(old, new)`` values). Returns a :class:`RedirectReport`.

    One heap scan for the whole batch. ``exclude`` lists holders to leave alone (the caller's
    own containers).
    """
    journal = current_journal(journal)
    report = RedirectReport()
    if not mapping:
        return report
    olds = [old for old, _ in mapping.values()]
    pairs = list(mapping.values())
    skip = {id(mapping), id(olds), id(pairs), id(exclude)} | {id(x) for x in exclude}
    skip |= {id(pair) for pair in pairs}  # our own (old, new) tuples
    own_frames: set[int] = set()
    frame: types.FrameType | None = sys._getframe()
    while frame is not None:  # the calling thread's frames keep their meaning (ours included)
        own_frames.add(id(frame))
        frame = frame.f_back
    holders = [h for h in _holders(olds, mapping) if id(h) not in skip]
    for holder in holders:
        if not isinstance(holder, types.FrameType):
            _rewrite_holder(holder, mapping, journal, report)
    del holders
    for old in olds:
        weak = weakref.getweakrefs(old)
        if weak:
            report.missed.append(f"{len(weak)} weak reference(s) to a {describe(type(old))}: "
                                 "a weak reference cannot be pointed elsewhere")
    with stop_the_world() as window:
        # On 3.11+ a running frame's locals live outside any object the GC can see, so the
        # threads' stacks are walked; on 3.10 this also covers the frames get_referrers found.
        for top in _cpython.current_frames().values():
            frame = top
            while frame is not None:
                if id(frame) not in own_frames:
                    _rewrite_frame(frame, mapping, journal, report)
                frame = frame.f_back
        # asked inside: when nested in an outer window (an update's apply), this one is the
        # outer window, still open, whose exclusive/elapsed are only known at its exit
        exclusive = window.still_exclusive()
    if not exclusive:
        report.caveats.append("the frame rewrites outlasted the stop-the-world guarantee: "
                              "another thread may have run meanwhile")
    return report


# Above this many objects, one pass over every tracked object with an id lookup beats
# gc.get_referrers(*olds), whose cost grows with (heap size x number of objects).
_BATCH_SCAN_THRESHOLD = 64


def _holders(olds: list[Any], mapping: Redirections) -> list[Any]:
    if len(olds) <= _BATCH_SCAN_THRESHOLD:
        return gc.get_referrers(*olds)
    ids = mapping.keys()
    referents = gc.get_referents
    return [obj for obj in gc.get_objects()
            if any(id(ref) in ids for ref in referents(obj))]


def _class_owning(namespace: dict[Any, Any]) -> type | None:
    """The class whose ``__dict__`` is ``namespace``, or None (writes must then go through
    ``setattr``, or the type's attribute cache keeps serving the old value)."""
    if "__module__" not in namespace:  # every class namespace has it; instance dicts rarely do
        return None
    for candidate in gc.get_referrers(namespace):
        if isinstance(candidate, type) and namespace in gc.get_referents(candidate.__dict__):
            return candidate
    return None


def _record(journal: Journal | None, report: RedirectReport, text: str,
            put_back: Callable[[], object]) -> None:
    report.redirected.append(text)
    if journal is not None:
        journal.record(_Rewrite(f"redirect {text}", put_back))


def _rewrite_holder(holder: object, mapping: Redirections, journal: Journal | None,
                    report: RedirectReport) -> None:
    if isinstance(holder, list):
        for index, item in enumerate(holder):
            pair = mapping.get(id(item))
            if pair is not None and pair[0] is item:
                holder[index] = pair[1]
                _record(journal, report, f"list[{index}]",
                        functools.partial(holder.__setitem__, index, item))
    elif isinstance(holder, dict):
        owner = None
        for key, value in list(holder.items()):
            pair = mapping.get(id(value))
            if pair is not None and pair[0] is value:
                owner = owner or _class_owning(holder)
                if owner is not None:
                    setattr(owner, key, pair[1])
                    _record(journal, report, f"class attribute {owner.__qualname__}.{key}",
                            functools.partial(setattr, owner, key, value))
                    continue
                holder[key] = pair[1]
                _record(journal, report, f"dict[{key!r}]",
                        functools.partial(holder.__setitem__, key, value))
            if id(key) in mapping and mapping[id(key)][0] is key:
                report.missed.append(f"a dict key ({describe(key)}): "
                                     "rehashing would change the dict")
    elif isinstance(holder, types.CellType):
        try:
            value = holder.cell_contents
        except ValueError:
            return
        pair = mapping.get(id(value))
        if pair is not None and pair[0] is value:
            holder.cell_contents = pair[1]
            _record(journal, report, "a closure cell",
                    functools.partial(setattr, holder, "cell_contents", value))
    elif isinstance(holder, (tuple, frozenset)):
        report.missed.append(f"a {type(holder).__name__} (immutable) of {len(holder)} items")
    elif isinstance(holder, (set,)):
        report.missed.append("a set member: rehashing would change the set")
    elif isinstance(holder, type):
        for name, value in list(vars(holder).items()):
            pair = mapping.get(id(value))
            if pair is not None and pair[0] is value:
                setattr(holder, name, pair[1])
                _record(journal, report, f"class attribute {holder.__qualname__}.{name}",
                        functools.partial(setattr, holder, name, value))
    else:
        _rewrite_object(holder, mapping, journal, report)


def _rewrite_object(holder: object, mapping: Redirections, journal: Journal | None,
                    report: RedirectReport) -> None:
    """An object holding the old one in a slot or in its attributes (inline values)."""
    found = False
    names = _slot_names(type(holder))
    instance_dict = None if isinstance(holder, types.ModuleType) else getattr(
        holder, "__dict__", None)
    if isinstance(instance_dict, dict):
        names += list(instance_dict)
    for name in names:
        try:
            value = object.__getattribute__(holder, name)
        except AttributeError:
            continue
        pair = mapping.get(id(value))
        if pair is not None and pair[0] is value:
            found = True
            _set_slot_or_attr(holder, name, pair[1])
            _record(journal, report, f"{describe(type(holder))} attribute {name!r}",
                    functools.partial(_set_slot_or_attr, holder, name, value))
    if not found:
        report.missed.append(f"a {type(holder).__name__} object (held inside it, out of reach)")


def _rewrite_frame(frame: types.FrameType, mapping: Redirections, journal: Journal | None,
                   report: RedirectReport) -> None:
    where = f"frame of {describe(frame.f_code)}"
    for name, value in list(frame.f_locals.items()):
        pair = mapping.get(id(value))
        if pair is not None and pair[0] is value:
            _cpython.write_frame_local(frame, name, pair[1])
            _record(journal, report, f"local {name!r} of {where}",
                    functools.partial(_cpython.write_frame_local, frame, name, value))


def redirectPointer(old: object, new: object, journal: Journal | None = None) -> RedirectReport:
    """Point every reference to ``old`` at ``new``; returns a :class:`RedirectReport`."""
    return redirect_references({id(old): (old, new)}, journal)
