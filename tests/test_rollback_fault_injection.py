"""Fault injection: every ready-made update and ``ModuleUpdate``, failing at every mutation point,
with an ``Exception`` and with a ``BaseException``, leaves the program exactly as it was, and its
outcome says so truthfully.

A mutation point is each operation recorded in a journal while ``apply`` runs (the fault is
raised right after the operation took effect and was recorded) and each call of the update's
transformer or walker (first, middle and last object; raised after the call changed its object).
A dry run of each update counts its points; then one fresh program per point is updated, failed
and compared with what it was: module globals, functions (code, defaults), classes (namespace),
and every object's class, ``__dict__`` and slots.

Then changes made without Pymoult's mechanisms: a plain ``setattr`` on a module or class the
update names, in ``apply`` or ``preupdate_setup``, is undone too; an operation that cannot be
undone makes the outcome "partially rolled back", never "rolled back".
"""

import threading
from concurrent.futures import wait as futures_wait

import pytest

import modules

from pymoult.errors import PartialRollbackError
from pymoult.highlevel.managers import ThreadedManager
from pymoult.highlevel.updates import (EagerConversionUpdate, HeapTraversalUpdate,
                                       LazyConversionUpdate, ModuleUpdate,
                                       QuiescentRedefineUpdate, SafeRedefineMethodUpdate,
                                       SafeRedefineUpdate, ThreadRebootUpdate, Update,
                                       UpdateState)
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.data_access import HeapWalker
from pymoult.lowlevel.journal import Journal, Operation, set_attribute
from pymoult.lowlevel.object_state import slot_names
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(120)
WAIT = 10.0
OBJECTS = 7  # first, middle and last are distinct

APP = """
RATE = 2
TABLE = {"a": 1}

def price(x, extra=0):
    return x * RATE + extra

class Item:
    kind = "item"

    def __init__(self, n):
        self.n = n
        self.label = f"item {n}"

    def show(self):
        return self.label

class Slotted:
    __slots__ = ("n",)

    def __init__(self, n):
        self.n = n
"""

NEW = """
RATE = 2
TABLE = {"a": 1}

def price(x, extra=1):
    return x * RATE * 100 + extra

class Item:
    kind = "new item"

    def __init__(self, n):
        self.n = n
        self.label = f"item {n}"
        self.cents = 0

    def show(self):
        return f"{self.label}: {self.cents}"

    def total(self):
        return self.cents

class Slotted:
    __slots__ = ("n", "cents")

    def __init__(self, n):
        self.n = n
        self.cents = 0

def added():
    return "new"
"""


class Injected(Exception):
    pass


class Halt(BaseException):
    """Stands for KeyboardInterrupt, SystemExit, a cancellation: not an ``Exception``."""


KINDS = {"Exception": Injected, "BaseException": Halt}


class Faults:
    """Counts the mutation points of one apply, and raises at the chosen one."""

    def __init__(self, kind=None, at_record=None, at_call=None):
        self.kind, self.at_record, self.at_call = kind, at_record, at_call
        self.armed = False
        self.records = self.calls = 0

    def recorded(self, operation):
        if self.armed:
            self.records += 1
            if self.records == self.at_record:
                raise self.kind(f"injected after recording {operation}")

    def called(self):
        self.calls += 1
        if self.calls == self.at_call:
            raise self.kind(f"injected in call {self.calls}")


@pytest.fixture
def faults(monkeypatch):
    holder = {}
    record = Journal.record

    def recording(self, operation):
        result = record(self, operation)
        current = holder.get("faults")
        if current is not None:
            current.recorded(operation)
        return result

    monkeypatch.setattr(Journal, "record", recording)
    return holder


class World:
    """The program an update changes: a real module (with its file), its objects, a thread."""

    def __init__(self, tmp_path, spawn, with_thread=False):
        self.app = modules.loaded(tmp_path, APP)
        self.new = modules.loaded(tmp_path, NEW)
        self.items = [self.app.Item(n) for n in range(OBJECTS)]
        self.slotted = [self.app.Slotted(n) for n in range(OBJECTS)]
        self.holder = {"first": self.items[0], "price": self.app.price}
        self.app.REGISTRY = [self.items, self.slotted]  # the data a heap traversal reaches
        self.runs, self.thread = [], None
        if with_thread:
            started = threading.Event()

            def old_main():
                self.runs.append("old")
                started.set()
                while not spawn.stop.is_set() and not self.stop.is_set():
                    staticUpdatePoint()

            self.stop = threading.Event()
            self.thread = spawn(DSU_Thread(target=old_main))
            assert started.wait(WAIT)

    def observe(self):
        return {
            "module": {name: _value(value) for name, value in vars(self.app).items()
                       if name not in ("__builtins__",)},
            "classes": {cls.__name__: {name: _value(value) for name, value in vars(cls).items()}
                        for cls in (self.app.Item, self.app.Slotted)},
            "objects": [_state(obj) for obj in self.items + self.slotted],
            "holder": {key: id(value) for key, value in self.holder.items()},
            "price": (self.holder["price"](3), self.app.price(3)),
            "thread": None if self.thread is None else (self.thread.reboots, list(self.runs)),
        }

    def finish(self):
        if self.thread is not None:
            self.stop.set()
            self.thread.join(WAIT)
            assert not self.thread.is_alive()
            assert self.runs == ["old"], "the rolled-back reboot happened after all"


def _value(value):
    """What must stay the same of a namespace's value: the object, and a function's code."""
    if callable(value) and hasattr(value, "__code__"):
        return (id(value), id(value.__code__), value.__defaults__, dict(vars(value)))
    for wrapper in (staticmethod, classmethod):
        if isinstance(value, wrapper):
            return (id(value), _value(value.__func__))
    return id(value)


def _state(obj):
    try:
        own = dict(object.__getattribute__(obj, "__dict__"))
    except AttributeError:
        own = None
    slots = {}
    for name in slot_names(type(obj)):
        try:
            slots[name] = object.__getattribute__(obj, name)
        except AttributeError:
            slots[name] = "<unset>"
    return type(obj), own, slots


class CentsWalker(HeapWalker):
    def __init__(self, item_class, faults):
        self.item_class, self.faults = item_class, faults

    def walk_Item(self, obj):
        if type(obj) is self.item_class:  # instances of this world only
            obj.n += 1000
            vars(obj)["walked"] = True
            self.faults.called()


def _transformer(faults):
    def transformer(obj):
        obj.cents = obj.n * 100
        if hasattr(obj, "__dict__"):
            vars(obj)["seen"] = True
        if hasattr(obj, "label"):
            object.__setattr__(obj, "label", "changed")
        faults.called()
    return transformer


CASES = {
    "SafeRedefineUpdate": lambda w, f: SafeRedefineUpdate(w.app, "price", w.new.price),
    "SafeRedefineMethodUpdate": lambda w, f: SafeRedefineMethodUpdate(
        w.app.Item, "show", w.new.Item.show),
    "QuiescentRedefineUpdate": lambda w, f: QuiescentRedefineUpdate(w.app, "price", w.new.price),
    "EagerConversionUpdate, in place": lambda w, f: EagerConversionUpdate(
        w.app.Item, w.new.Item, _transformer(f), module=w.app),
    "EagerConversionUpdate, rebuilt": lambda w, f: EagerConversionUpdate(
        w.app.Slotted, w.new.Slotted, _transformer(f), module=w.app),
    "LazyConversionUpdate": lambda w, f: LazyConversionUpdate(
        w.app.Item, w.new.Item, _transformer(f), module=w.app),
    "ThreadRebootUpdate": lambda w, f: ThreadRebootUpdate(w.thread, lambda: None),
    "HeapTraversalUpdate": lambda w, f: HeapTraversalUpdate(
        CentsWalker(w.app.Item, f), modules=[w.app.__name__]),
    "ModuleUpdate": lambda w, f: ModuleUpdate(
        w.app, source=NEW, transformers={"Item": _transformer(f), "Slotted": _transformer(f)}),
}


def _drive(update):
    """Apply ``update`` with a manager of its own; returns its future, done."""
    manager = ThreadedManager().start()
    try:
        future = manager.add_update(update)
        futures_wait([future], WAIT)
        assert future.done(), f"{update!r} did not finish within {WAIT} s"
    finally:
        assert manager.stop(WAIT)
    return future


def _armed(update, faults):
    """Arm ``faults`` for the update's apply only."""
    apply = update.apply

    def armed_apply():
        faults.armed = True
        try:
            apply()
        finally:
            faults.armed = False

    update.apply = armed_apply
    return update


def _run(case, faults, holder, tmp_path, spawn):
    world = World(tmp_path, spawn, with_thread=case == "ThreadRebootUpdate")
    before = world.observe()
    holder["faults"] = faults
    try:
        update = _armed(CASES[case](world, faults), faults)
        future = _drive(update)
    finally:
        holder.pop("faults", None)
    return world, before, update, future


def _chain(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(CASES))
def test_failing_at_every_mutation_point_leaves_the_program_as_it_was(
        case, kind, faults, tmp_path, spawn):
    dry = Faults()
    world, before, update, future = _run(case, dry, faults, tmp_path, spawn)
    assert future.exception() is None and update.state is UpdateState.APPLIED
    if case == "ThreadRebootUpdate":
        assert update.reboot.result(WAIT) == 1  # served once the thread was resumed
    assert world.observe() != before, "the update changes nothing: the test would prove nothing"
    if case == "ThreadRebootUpdate":
        world.runs[:] = ["old"]  # the dry run's reboot is not this test's subject
    assert dry.records > 0
    calls = sorted({1, (dry.calls + 1) // 2, dry.calls}) if dry.calls else []
    points = [("record", n) for n in range(1, dry.records + 1)] + [("call", n) for n in calls]

    for point, number in points:
        injected = Faults(KINDS[kind], **{f"at_{point}": number})
        world, before, update, future = _run(case, injected, faults, tmp_path, spawn)
        where = f"{case}: {kind} at {point} {number}"
        error = future.exception()
        assert error is not None, where
        assert any(isinstance(link, KINDS[kind]) for link in _chain(error)), (where, error)
        if kind == "BaseException":
            assert isinstance(error, Halt), (where, error)  # re-raised as itself
        assert update.state is UpdateState.ROLLED_BACK, (where, update)
        assert update.journal.state == "rolled back", where
        for item in world.items:  # touch every object: nothing converts after a rollback
            item.show()
        assert world.observe() == before, where
        world.finish()


class PlainChanges(Update):
    """Changes a module and a class by hand in ``apply`` (and ``preupdate_setup``), then fails."""

    def __init__(self, app, in_setup=False):
        super().__init__(name="plain changes")
        self.app, self.in_setup = app, in_setup

    def preupdate_setup(self):
        if self.in_setup:
            self.app.RATE = 99
            set_attribute(self.app, "TABLE", {})  # through a mechanism: journaled anyway

    def apply(self):
        self.app.RATE = 7
        self.app.ADDED = "new"
        self.app.Item.kind = "plain"
        del self.app.Item.show
        vars(self.app)["price"] = len
        raise Injected("after plain changes")


@pytest.mark.parametrize("in_setup", [False, True], ids=["in apply", "in setup and apply"])
def test_plain_changes_to_what_the_update_names_are_undone(in_setup, tmp_path, spawn):
    world = World(tmp_path, spawn)
    before = world.observe()
    update = PlainChanges(world.app, in_setup)
    future = _drive(update)
    assert isinstance(future.exception(), Injected)
    assert update.state is UpdateState.ROLLED_BACK
    assert world.observe() == before
    texts = [str(op) for op in update.journal]
    assert any("RATE outside Pymoult's mechanisms" in text for text in texts), texts


class Stuck(Operation):
    text = "an operation that cannot be undone"

    def undo(self):
        raise RuntimeError("cannot")


class Unrollable(Update):
    def __init__(self, app):
        super().__init__(name="unrollable")
        self.app = app

    def apply(self):
        set_attribute(self.app, "RATE", 5)
        self.journal.record(Stuck())
        raise Halt("fails")


def test_a_rollback_that_leaves_something_says_so(tmp_path, spawn):
    world = World(tmp_path, spawn)
    update = Unrollable(world.app)
    future = _drive(update)
    error = future.exception()
    assert isinstance(error, PartialRollbackError) and isinstance(error.__cause__, Halt)
    assert update.state is UpdateState.PARTIALLY_ROLLED_BACK
    assert "partially rolled back: could not undo an operation that cannot be undone" in str(error)
    assert world.app.RATE == 2  # the rest was undone


class SetupThenGiveUp(Update):
    def __init__(self, app):
        super().__init__(name="gives up", max_tries=1)
        self.app = app
        self.on_timeout = "fail"

    def preupdate_setup(self):
        set_attribute(self.app, "RATE", 42)

    def check_alterability(self):
        return False

    def wait_alterability(self):
        return False

    def apply(self):
        raise AssertionError("never applied")


def test_an_update_that_never_applies_undoes_its_setup(tmp_path, spawn):
    world = World(tmp_path, spawn)
    before = world.observe()
    update = SetupThenGiveUp(world.app)
    future = _drive(update)
    assert future.exception() is not None and update.state is UpdateState.FAILED
    assert world.observe() == before
