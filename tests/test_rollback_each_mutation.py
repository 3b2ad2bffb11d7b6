"""An update whose apply fails after one kind of mutation is rolled back completely, by both
managers: the program is observably as before, the future carries the error, and the manager
applies the next update.

Each case performs one mutation and then fails (apply raises, or the mechanism itself raises);
``observe`` captures everything a case could change, before and after.
"""

import re
import sys
import threading
import types

import pytest

from pymoult.errors import TransformerError
from pymoult.highlevel.managers import Manager, ThreadedManager
from pymoult.highlevel.updates import Update, UpdateState
from pymoult.lowlevel.data_access import startEagerUpdate
from pymoult.lowlevel.data_update import (addFieldToClass, addMethodToClass, redefineClass,
                                          updateLocalVarInThread, updateToClass)
from pymoult.lowlevel.journal import delete_attribute, set_attribute
from pymoult.lowlevel.lazy_conversion import startLazyUpdate
from pymoult.lowlevel.redirection import redirectPointer
from pymoult.lowlevel.relinking import redefineFunction, redefineMethod

pytestmark = pytest.mark.timeout(30)
WAIT = 10.0
STEPS = 1000

APP = """
RATE = 1
def price(x):
    return x * RATE
class Item:
    def __init__(self, n):
        self.n = n
    def show(self):
        return f"item {self.n}"
class Slotted:
    __slots__ = ("n",)
    def __init__(self, n):
        self.n = n
def wait_here(inside, go, seen):
    mode = "old"
    inside.set()
    go.wait(60)
    seen.append(mode)
"""

NEW = """
def price(x):
    return x * 100
class Item:
    def show(self):
        return f"ITEM {self.n} {self.cents}"
class Slotted:
    __slots__ = ("n", "cents")
"""


def _module(name, source):
    module = types.ModuleType(name)
    exec(source, module.__dict__)
    return module


class World:
    """The application one case mutates: a module, instances, a holder and a blocked thread."""

    def __init__(self):
        self.app = _module("rollback_app", APP)
        self.new = _module("rollback_app_v2", NEW)
        self.items = [self.app.Item(n) for n in range(4)]
        self.slotted = [self.app.Slotted(n) for n in range(3)]
        self.holder = {"first": self.items[0], "slot": self.slotted[0]}
        self.price = self.app.price  # a reference taken before the update
        self.inside, self.go, self.seen = threading.Event(), threading.Event(), []
        self.thread = threading.Thread(target=self.app.wait_here,
                                       args=(self.inside, self.go, self.seen), daemon=True)
        self.thread.start()
        assert self.inside.wait(WAIT)

    def local_mode(self):
        frame = sys._current_frames()[self.thread.ident]
        while frame is not None and frame.f_code is not self.app.wait_here.__code__:
            frame = frame.f_back
        return frame.f_locals["mode"]

    def observe(self):
        app = self.app
        return {
            "module": {name: value for name, value in vars(app).items()
                       if not name.startswith("__")},
            "price": (self.price(3), app.price(3), self.price.__code__),
            "classes": {name: dict(vars(getattr(app, name))) for name in ("Item", "Slotted")
                        if hasattr(app, name)},
            "items": [(type(i), dict(vars(i)), _outcome(i.show)) for i in self.items],
            "slotted": [(type(s), s.n, hasattr(s, "cents")) for s in self.slotted],
            "holder": dict(self.holder),
            "local": self.local_mode(),
        }

    def finish(self):
        self.go.set()
        self.thread.join(WAIT)
        return self.seen


def _outcome(call):
    try:
        return call()
    except Exception as exc:
        return f"raises {type(exc).__name__}"


def _fail(world, what):
    raise ValueError(f"failed after {what}")


def _broken_transformer(item):
    if item.n == 2:
        raise KeyError("no price for item 2")
    item.cents = item.n * 100


CASES = {
    "function redefined": lambda w: redefineFunction(w.app, "price", w.new.price),
    "method redefined": lambda w: redefineMethod(w.app.Item, "show", w.new.Item.show),
    "class updated in place": lambda w: redefineClass(w.app, "Item", w.new.Item),
    "class replaced (slots changed)": lambda w: redefineClass(
        w.app, "Slotted", w.new.Slotted, transformer=lambda s: setattr(s, "cents", s.n)),
    "one object converted": lambda w: updateToClass(
        w.items[1], w.app.Item, w.new.Item, lambda i: setattr(i, "cents", 1)),
    "field and method added": lambda w: (addFieldToClass(w.app.Item, "cents", 0),
                                         addMethodToClass(w.app.Item, "cost", lambda s: 1)),
    "eager conversion": lambda w: startEagerUpdate(
        w.app.Item, lambda i: setattr(i, "cents", i.n * 100)),
    "lazy conversion": lambda w: startLazyUpdate(
        w.app.Item, lambda i: setattr(i, "cents", i.n * 100)),
    "pointer redirected": lambda w: redirectPointer(w.items[0], w.app.Item(99)),
    "local variable written": lambda w: updateLocalVarInThread(
        w.thread, w.app.wait_here, "mode", "new"),
    "module attributes set and deleted": lambda w: (set_attribute(w.app, "RATE", 7),
                                                    set_attribute(w.app, "ADDED", 1),
                                                    delete_attribute(w.app, "Slotted")),
}


class Failing(Update):
    def __init__(self, world, case, mutate=None, **kwargs):
        super().__init__(name=f"fails after {case}", **kwargs)
        self.world, self.case = world, case
        self.mutate = CASES[case] if mutate is None else mutate

    def apply(self):
        self.mutate(self.world)
        _fail(self.world, self.case)


class Flag(Update):
    def apply(self):
        pass


def _run(kind, updates):
    """Add ``updates`` to a manager of ``kind`` and return their futures, all done."""
    if kind == "threaded":
        manager = ThreadedManager().start()
        try:
            futures = [manager.add_update(update) for update in updates]
            assert manager.wait_current_update(WAIT)
        finally:
            assert manager.stop(WAIT)
        return futures
    manager = Manager()
    futures = [manager.add_update(update) for update in updates]
    for _ in range(STEPS):
        if all(future.done() for future in futures):
            return futures
        manager.apply_next_update()
    raise AssertionError(f"{manager!r} did not finish within {STEPS} steps")


def _check_the_case_changes_something(case):
    """Without the rollback the case's mutation shows (else the test would prove nothing)."""
    probe = World()
    try:
        before = probe.observe()
        CASES[case](probe)
        for item in probe.items:  # a lazy conversion shows once objects are touched
            _outcome(item.show)
        assert probe.observe() != before
    finally:
        probe.finish()


@pytest.fixture
def world():
    world = World()
    yield world
    world.finish()


@pytest.mark.parametrize("kind", ["polling", "threaded"])
@pytest.mark.parametrize("case", list(CASES))
def test_apply_raising_after_each_kind_of_mutation_is_rolled_back(kind, case, world):
    before = world.observe()
    _check_the_case_changes_something(case)

    failing, after = Failing(world, case), Flag(name="next")
    failed_future, next_future = _run(kind, [failing, after])

    with pytest.raises(ValueError, match=re.escape(f"failed after {case}")):
        failed_future.result(0)
    assert failing.state is UpdateState.ROLLED_BACK
    assert failing.journal.state == "rolled back" and len(failing.journal) > 0
    for item in world.items:  # touch every object: nothing converts after a rollback
        item.show()
    assert world.observe() == before
    assert next_future.result(0) is after and after.state is UpdateState.APPLIED
    assert world.finish() == ["old"]


@pytest.mark.parametrize("kind", ["polling", "threaded"])
def test_a_transformer_failing_midway_is_rolled_back(kind, world):
    before = world.observe()
    failing = Failing(world, "eager conversion, transformer raises",
                      mutate=lambda w: startEagerUpdate(w.app.Item, _broken_transformer))
    failed_future, next_future = _run(kind, [failing, Flag(name="next")])
    with pytest.raises(TransformerError, match="no price for item 2") as info:
        failed_future.result(0)
    assert isinstance(info.value.__cause__, KeyError)
    assert failing.state is UpdateState.ROLLED_BACK
    assert world.observe() == before
    assert next_future.result(0).state is UpdateState.APPLIED
