"""Regressions for bugs found in review of the data mechanisms, one test each."""

import dataclasses
import gc
import threading
import types
import weakref

import pytest

from pymoult.errors import RollbackError, ThreadStateError, TransformerError
from pymoult.lowlevel.data_access import startEagerUpdate, startLazyUpdate
from pymoult.lowlevel.data_update import redefineClass, updateLocalVarInThread, updateToClass
from pymoult.lowlevel.journal import Journal

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


def module_with(source, name):
    module = types.ModuleType(name)
    exec(source, module.__dict__)
    return module


def test_slotted_class_updated_in_place_keeps_working():
    src = "class P:\n    __slots__ = ('x',)\n    def __init__(self, x):\n        self.x = x\n"
    old = module_with(src + "    def get(self):\n        return self.x\n", "slots_a")
    new = module_with(src + "    def get(self):\n        return self.x * 10\n", "slots_a_v2")
    p = old.P(2)
    redefineClass(old, "P", new.P)
    assert p.get() == 20 and old.P(3).get() == 30


def test_recorded_old_values_come_from_the_instance_only():
    class Counter:
        count = 0  # a class default of the same name

        @property
        def label(self):
            raise RuntimeError("getter called")

        @label.setter
        def label(self, value):
            self._label = value

    counter = Counter()
    journal = Journal()
    with journal.recording():
        startEagerUpdate(Counter, lambda c: (setattr(c, "count", 5), setattr(c, "label", "x")))
    journal.rollback()
    assert "count" not in vars(counter) and "_label" not in vars(counter)
    Counter.count = 99
    assert counter.count == 99  # not shadowed by a restored copy of the old default


def test_concurrent_eager_updates_of_one_class_leave_no_hook():
    class Shared:
        def __init__(self):
            self.n = 0

    objects = [Shared() for _ in range(200)]
    start = threading.Barrier(2, timeout=WAIT)

    def update(field):
        start.wait()
        startEagerUpdate(Shared, lambda o: setattr(o, field, 1))

    threads = [threading.Thread(target=update, args=(f,)) for f in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert "__setattr__" not in Shared.__dict__ and "__delattr__" not in Shared.__dict__
    assert all(o.a == 1 and o.b == 1 for o in objects)


def test_failing_transformer_of_an_in_place_class_update_changes_nothing():
    old = module_with("class C:\n    def f(self):\n        return 'v1'\n", "inplace_a")
    new = module_with("class C:\n    def f(self):\n        return 'v2'\n", "inplace_a_v2")
    c = old.C()

    def broken(obj):
        obj.touched = True
        raise ValueError("no")

    with pytest.raises(TransformerError):
        redefineClass(old, "C", new.C, transformer=broken)
    assert c.f() == "v1" and not hasattr(c, "touched")


@dataclasses.dataclass(frozen=True)
class FrozenA:
    x: int


@dataclasses.dataclass(frozen=True)
class FrozenB:
    x: int

    def double(self):
        return self.x * 2


@dataclasses.dataclass(frozen=True, slots=True) if hasattr(dataclasses, "KW_ONLY") else (lambda c: c)
class FrozenSlots:
    x: int


def test_frozen_dataclasses_convert_and_roll_back():
    obj = FrozenA(2)
    converted = updateToClass(obj, FrozenA, FrozenB)
    assert converted is obj and obj.double() == 4
    frozen = [FrozenSlots(i) for i in range(5)]
    seen = []

    def transformer(o):
        object.__setattr__(o, "x", o.x * 10)
        seen.append(o)
        if len(seen) == 4:
            raise ValueError("stop")

    with pytest.raises(TransformerError):
        startEagerUpdate(FrozenSlots, transformer)
    assert [f.x for f in frozen] == [0, 1, 2, 3, 4]


def make_class():
    class Account:
        def __init__(self, n):
            self.n = n
    return Account


def test_lazy_nested_conversion_survives_a_failure_of_the_outer_one():
    Account = make_class()
    a, b = Account(1), Account(2)
    calls = []

    def transformer(obj):
        calls.append(obj.n if obj is b else "a")
        obj.cents = 100
        if obj is a:
            b.n  # converts b, completely
            raise ValueError("a fails")

    startLazyUpdate(Account, transformer)
    with pytest.raises(TransformerError):
        a.n
    assert type(b) is Account and b.cents == 100  # b stays converted, with its changes
    assert type(a) is not Account  # still pending (reading it would convert it)
    assert "cents" not in object.__getattribute__(a, "__dict__")  # its changes undone


def test_pending_objects_that_die_untouched_let_the_conversion_finish():
    Account = make_class()
    keep = Account(1)
    doomed = Account(2)
    conversion = startLazyUpdate(Account, None)
    del doomed
    gc.collect()
    keep.n
    assert conversion.done.is_set()


def test_second_lazy_update_of_a_class_still_converting_is_refused():
    Account = make_class()
    obj = Account(1)
    startLazyUpdate(Account, None)
    with pytest.raises(ThreadStateError, match="is still open \\(1 objects pending\\)"):
        startLazyUpdate(Account, None)
    obj.n
    startLazyUpdate(Account, None)  # the first is done: a new one may start


def test_constructing_from_a_pending_object_builds_a_live_instance():
    Account = make_class()
    obj = Account(1)
    startLazyUpdate(Account, None)
    made = type(obj)(5)
    assert type(made) is Account and made.n == 5
    assert obj.n == 1 and type(obj) is Account


def test_lazy_conversion_of_a_slotted_class():
    class Slot:
        __slots__ = ("n", "extra")

        def __init__(self, n):
            self.n = n

    obj = Slot(3)
    startLazyUpdate(Slot, lambda o: setattr(o, "extra", o.n + 1))
    assert obj.extra == 4 and type(obj) is Slot


def test_lazy_conversion_without_a_journal_keeps_nothing_alive():
    Account = make_class()
    obj = Account(1)
    ref = weakref.ref(obj)
    startLazyUpdate(Account, lambda o: setattr(o, "big", bytearray(10)))
    obj.n
    del obj
    gc.collect()
    assert ref() is None


def test_rolling_back_a_write_to_an_unbound_local_is_reported(spawn):
    inside = threading.Event()
    go = threading.Event()

    def work():
        inside.set()
        go.wait(WAIT)
        value = 1  # unbound when the update writes it
        return value

    thread = spawn(threading.Thread(target=work))
    assert inside.wait(WAIT)
    journal = Journal()
    with journal.recording():
        updateLocalVarInThread(thread, work, "value", 42)
    with pytest.raises(RollbackError, match=r"set local 'value' of .*work in 'Thread-\d+ \(work\)'") as info:
        journal.rollback()
    assert "was unbound before the update" in str(info.value.failures[0][1])
    go.set()
    thread.join(WAIT)


def test_redirection_writes_class_attributes_through_the_class_and_reports_weakrefs():
    from pymoult.lowlevel.redirection import redirectPointer

    class Old:
        pass

    class New:
        pass

    old, new = Old(), New()

    class Config:
        default = old

    assert Config.default is old  # warm the type's attribute cache
    watcher = weakref.ref(old)
    report = redirectPointer(old, new)
    assert Config.default is new  # seen through the cache, not only in the dict
    assert any("weak reference" in missed for missed in report.missed)
    assert type(watcher()) is Old  # the weak reference still points at the old object


def test_large_batches_use_one_heap_pass():
    from pymoult.lowlevel import redirection

    class Old:
        pass

    class New:
        pass

    olds = [Old() for _ in range(redirection._BATCH_SCAN_THRESHOLD + 10)]
    holder = {i: o for i, o in enumerate(olds)}
    mapping = {id(o): (o, New()) for o in olds}
    report = redirection.redirect_references(mapping, exclude=(olds,))
    assert all(type(v) is New for v in holder.values())
    assert len(report.redirected) == len(olds)


def test_redirect_pointer_inside_an_outer_stop_the_world_window():
    # the nested window is the outer one, still open: its exclusive/elapsed were None
    from pymoult.lowlevel.redirection import redirectPointer
    from pymoult.lowlevel.world import stop_the_world

    class Box:
        pass

    old, new = Box(), Box()
    holder = {"ref": old}
    with stop_the_world(0.5):
        report = redirectPointer(old, new)
    assert holder["ref"] is new
    assert not any("stop-the-world" in caveat for caveat in report.caveats)
