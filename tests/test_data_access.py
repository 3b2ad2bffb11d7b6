import dataclasses
import sys
import threading
import types

import pytest

from pymoult.errors import PymoultTypeError, TransformerError, WrongStrategy
from pymoult.lowlevel.data_access import (DataAccessor, HeapWalker, instances_of, startEagerUpdate,
                                          traverseHeap)
from pymoult.lowlevel.data_update import PROGRESS_BATCH
from pymoult.lowlevel.journal import Journal

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


class Item:
    def __init__(self, n):
        self.n = n


class SpecialItem(Item):
    pass


@dataclasses.dataclass(frozen=True)
class Frozen:
    n: int


def test_instances_are_found_with_their_subclasses():
    items = [Item(i) for i in range(50)] + [SpecialItem(99)]
    found = instances_of(Item)
    assert {id(o) for o in items} <= {id(o) for o in found}
    assert all(isinstance(o, Item) for o in found)
    exact = instances_of(Item, subclasses=False)
    assert all(type(o) is Item for o in exact) and items[-1] not in exact
    assert {id(o) for o in DataAccessor(Item)} >= {id(o) for o in items}


def test_strategies():
    with pytest.raises(WrongStrategy, match=r"^unknown strategy 'fast': use one of"):
        DataAccessor(Item, "fast")
    with pytest.raises(PymoultTypeError, match="expected a class"):
        DataAccessor(3)


def test_eager_update_converts_every_instance_and_rolls_back():
    class Fresh(Item):  # a class of this test's own: no instance of another test is found
        pass

    class FreshSpecial(Fresh):
        pass

    items = [Fresh(i) for i in range(1000)] + [FreshSpecial(5)]
    journal = Journal()
    with journal.recording():
        count = startEagerUpdate(Fresh, lambda o: setattr(o, "double", 2 * o.n))
    assert count == 1001
    assert all(o.double == 2 * o.n for o in items)
    assert "__setattr__" not in Fresh.__dict__ and "__setattr__" not in FreshSpecial.__dict__
    journal.rollback()
    assert not any(hasattr(o, "double") for o in items)


class ProgressLog(Journal):
    """A journal that keeps every progress report."""

    def __init__(self):
        super().__init__("progress")
        self.reports = []

    def report_progress(self, step, done, total):
        super().report_progress(step, done, total)
        self.reports.append(done)


@pytest.mark.parametrize("atomic", [True, False])
def test_eager_update_reports_its_progress_once_per_batch(atomic):
    class Counted(Item):
        pass

    items = [Counted(i) for i in range(2 * PROGRESS_BATCH + 5)]
    journal = ProgressLog()
    with journal.recording():
        startEagerUpdate(Counted, lambda o: setattr(o, "seen", True), atomic=atomic)
    total = len(items)
    assert journal.reports == [0, PROGRESS_BATCH, 2 * PROGRESS_BATCH, total]
    assert journal.progress == {"step": f"eager update of {__name__}.{Counted.__qualname__}",
                                "done": total, "total": total}
    assert all(o.seen for o in items)


def test_a_failing_transformer_leaves_the_progress_where_it_stopped():
    class Counted(Item):
        pass

    items = [Counted(i) for i in range(PROGRESS_BATCH + 10)]
    calls = []

    def transformer(obj):
        calls.append(obj)
        if len(calls) == PROGRESS_BATCH + 4:
            raise ValueError("bad")

    journal = ProgressLog()
    with journal.recording(), pytest.raises(TransformerError):
        startEagerUpdate(Counted, transformer)
    assert journal.reports == [0, PROGRESS_BATCH]  # the second batch never finished
    assert journal.progress["done"] == PROGRESS_BATCH and len(items) == PROGRESS_BATCH + 10
    journal.rollback()


def test_eager_update_without_a_journal_reports_nothing():
    class Counted(Item):
        pass

    items = [Counted(i) for i in range(10)]
    assert startEagerUpdate(Counted, lambda o: setattr(o, "seen", True)) == 10
    assert all(o.seen for o in items)


def test_failing_transformer_restores_the_instances_before_it():
    items = [Item(i) for i in range(200)]
    seen = []

    def transformer(obj):
        seen.append(obj)
        obj.n = -obj.n
        del obj.n
        obj.n = "changed"
        if len(seen) == 120:
            raise ValueError("bad object")

    with pytest.raises(TransformerError, match=r"on object 120 of \d+ .*the 119 before it were "
                                               r"restored") as info:
        startEagerUpdate(Item, transformer)
    assert info.value.index == 119 and info.value.obj is seen[-1]
    assert [o.n for o in items] == list(range(200))  # every instance as it was
    assert "__setattr__" not in Item.__dict__


def test_non_atomic_failure_says_what_it_left():
    items = [Item(i) for i in range(10)]
    calls = []

    def transformer(obj):
        calls.append(obj)
        if len(calls) == 3:
            raise ValueError("bad")
        obj.done = True

    with pytest.raises(TransformerError, match="the 2 before it were left converted"):
        startEagerUpdate(Item, transformer, atomic=False)
    assert [hasattr(o, "done") for o in calls] == [True, True, False]
    assert len(items) == 10


def test_frozen_dataclass_transformer_is_rolled_back_too():
    frozen = [Frozen(i) for i in range(20)]

    def add_label(obj):
        object.__setattr__(obj, "label", f"#{obj.n}")  # frozen: the transformer bypasses setattr

    journal = Journal()
    with journal.recording():
        startEagerUpdate(Frozen, add_label)
    assert frozen[3].label == "#3"
    journal.rollback()
    assert not any(hasattr(o, "label") for o in frozen)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen[0].n = 5  # still frozen: the temporary hooks are gone


def test_traverse_heap_visits_reachable_data_once_by_type():
    module = types.ModuleType("heap_app")
    shared = Item(1)
    module.registry = {"a": shared, "b": [shared, Item(2)], "c": (Item(3),)}
    module.helper = len
    sys.modules["heap_app"] = module
    try:
        class Counter(HeapWalker):
            def __init__(self):
                self.items = []
                self.visited = 0

            def walk_Item(self, obj):
                self.items.append(obj.n)

            def walk(self, obj):
                self.visited += 1
                super().walk(obj)

        walker = Counter()
        assert traverseHeap(walker, ["heap_app"]) == walker.visited
        assert sorted(walker.items) == [1, 2, 3]  # the shared one once
    finally:
        del sys.modules["heap_app"]
    with pytest.raises(PymoultTypeError, match="no module named 'nope'"):
        traverseHeap(Counter(), ["nope"])
    with pytest.raises(PymoultTypeError, match="must have a walk"):
        traverseHeap(object(), ["sys"])


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
