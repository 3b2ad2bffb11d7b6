import dataclasses
import gc
import threading
import weakref

import pytest

from pymoult.errors import PymoultTypeError, ThreadStateError, TransformerError
from pymoult.lowlevel.data_access import DataAccessor, startLazyUpdate
from pymoult.lowlevel.journal import Journal

pytestmark = pytest.mark.timeout(30)
WAIT = 10.0


def make_class():
    """A fresh class per test: conversions of one test never see another's objects."""

    class Account:
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def describe(self):
            return f"account {self.n}"

    return Account


def test_each_object_is_transformed_exactly_once_under_four_threads():
    Account = make_class()
    accounts = [Account(i) for i in range(2000)]
    transformed = {}

    def transformer(obj):
        transformed[id(obj)] = transformed.get(id(obj), 0) + 1
        obj.cents = obj.n * 100  # two writes: nobody may see one without the other
        obj.check = obj.cents + 1

    conversion = startLazyUpdate(Account, transformer)
    start = threading.Barrier(4, timeout=WAIT)
    errors = []

    def reader(kind):
        try:
            start.wait()
            for obj in accounts:
                if kind == 0:
                    assert obj.check == obj.cents + 1
                elif kind == 1:
                    assert obj.describe() == f"account {obj.n}" and obj.check == obj.cents + 1
                elif kind == 2:
                    assert len(obj) == obj.n and obj.check == obj.cents + 1
                else:
                    obj.seen = True
                    assert obj.check == obj.cents + 1
        except Exception as exc:  # reported below: a thread's assert does not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not errors, errors[:3]
    assert len(transformed) == 2000 and set(transformed.values()) == {1}
    assert all(type(obj) is Account for obj in accounts)
    assert conversion.done.is_set() and conversion.converted == 2000
    assert "__getattribute__" not in Account.__dict__  # converted objects meet no hook
    assert type(Account(5)) is Account


@pytest.mark.parametrize("touch", [
    lambda o: o.n,
    lambda o: setattr(o, "other", 1),
    lambda o: o.describe(),
    lambda o: len(o),
    lambda o: o.__class__,
    lambda o: delattr(o, "n") or setattr(o, "n", 3),
])
def test_any_first_access_converts(touch):
    Account = make_class()
    obj = Account(3)
    startLazyUpdate(Account, lambda o: setattr(o, "converted", True))
    assert type(obj) is not Account and isinstance(obj, Account)
    touch(obj)
    assert type(obj) is Account and obj.converted is True


def test_failing_transformer_leaves_the_object_pending_and_retries():
    Account = make_class()
    obj = Account(1)
    fail = [True]

    def transformer(o):
        o.partial = True
        if fail[0]:
            raise ValueError("not now")
        o.done = True

    startLazyUpdate(Account, transformer)
    with pytest.raises(TransformerError, match="raised ValueError") as info:
        obj.n
    assert info.value.obj is obj and type(obj) is not Account
    fail[0] = False
    assert obj.n == 1 and obj.done and type(obj) is Account


class Interrupt(BaseException):
    """Raised by a transformer: not an ``Exception``, as KeyboardInterrupt or SystemExit."""


def make_slotted_class():
    class Slotted:
        __slots__ = ("n", "other", "partial")

        def __init__(self, n):
            self.n = n
            self.other = "o"

    return Slotted


def state_of(obj):
    """Every own attribute of ``obj`` (dict and slots), read past any hook."""
    state = dict(object.__getattribute__(obj, "__dict__")) if hasattr(type(obj), "__dict__") \
        and "__dict__" in dir(type(obj)) else {}
    for klass in type(obj).__mro__:
        for name in vars(klass).get("__slots__", ()):
            try:
                state[name] = object.__getattribute__(obj, name)
            except AttributeError:
                pass
    return state


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit, Interrupt])
@pytest.mark.parametrize("factory", [make_class, make_slotted_class])
def test_a_base_exception_in_the_transformer_leaves_the_object_exactly_as_before(raised, factory):
    Cls = factory()
    obj = Cls(4)
    obj.other = "o"
    raising = [True]

    def transformer(o):
        o.partial = True
        o.n = 99
        del o.other
        object.__setattr__(o, "n", 100)
        if raising[0]:
            raise raised("stop")
        o.partial = False

    conversion = startLazyUpdate(Cls, transformer)
    before = state_of(obj)
    with pytest.raises(raised, match="stop"):  # re-raised as it was, not a TransformerError
        obj.n
    assert state_of(obj) == before == {"n": 4, "other": "o"}
    assert type(obj) is not Cls and conversion.pending_count == 1 and conversion.converted == 0
    assert not conversion.writes.entries  # nothing of the failed try is kept for rollback
    raising[0] = False
    assert obj.n == 100 and obj.partial is False and type(obj) is Cls  # the next touch retries
    assert conversion.done.is_set()


@pytest.mark.parametrize("ending", ["all converted", "rolled back", "undone, no journal",
                                    "objects died"])
def test_no_hook_remains_once_every_object_is_converted_or_the_conversion_dropped(ending):
    Account = make_class()
    own = dict(vars(Account))
    accounts = [Account(i) for i in range(5)]
    accounts[0].n  # no object is converted before the update starts
    journal = Journal()
    with journal.recording() if ending == "rolled back" else _nothing():
        conversion = startLazyUpdate(Account, lambda o: setattr(o, "cents", o.n * 100))
    assert dict(vars(Account)) == own  # the hooks are on the pending class only
    accounts[1].n  # one converted before the end
    if ending == "all converted":
        for obj in accounts:
            len(obj)
    elif ending == "rolled back":
        journal.rollback()
    elif ending == "undone, no journal":
        conversion.undo()
    else:
        del accounts[:]
        gc.collect()
    assert conversion.done.is_set() and conversion.pending_cls is None
    assert dict(vars(Account)) == own  # the live class: not a name added, replaced or removed
    assert all(type(obj) is Account for obj in accounts)
    for obj in accounts:  # no object meets a hook: attribute access is the plain object one
        assert type(obj).__getattribute__ is object.__getattribute__
        assert type(obj).__setattr__ is object.__setattr__
    gc.collect()
    assert Account.__subclasses__() == []  # the pending class is gone with its hooks


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_dict_held_before_conversion_stays_the_objects_dict():
    Account = make_class()
    obj = Account(1)
    startLazyUpdate(Account, lambda o: setattr(o, "cents", o.n * 100))
    held = object.__getattribute__(obj, "__dict__")  # taken past the hook, while pending
    assert obj.cents == 100
    obj.extra = 1
    assert vars(obj) is held and held == {"n": 1, "cents": 100, "extra": 1}


def test_rollback_restores_converted_and_pending_objects():
    Account = make_class()
    first, second = Account(1), Account(2)
    journal = Journal()
    with journal.recording():
        conversion = startLazyUpdate(Account, lambda o: setattr(o, "n", o.n * 10))
    assert first.n == 10
    assert str(journal.operations[0]) == (
        f"lazy conversion of {Account.__module__}.{Account.__qualname__} (1 converted, 1 pending)")
    journal.rollback()
    assert type(second) is Account and second.n == 2  # never converted
    assert first.n == 1  # restored
    assert conversion.done.is_set()


def test_frozen_dataclass_lazy_conversion_and_rollback():
    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int

    point = Point(2)
    journal = Journal()
    with journal.recording():
        startLazyUpdate(Point, lambda p: object.__setattr__(p, "y", p.x + 1))
    assert point.y == 3
    journal.rollback()
    assert not hasattr(point, "y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 1


def test_progressive_accessor_yields_objects_as_they_are_touched():
    Account = make_class()
    accounts = [Account(i) for i in range(3)]
    accessor = DataAccessor(Account, "progressive")
    accounts[2].n
    accounts[0].describe()
    accounts[1].n = 7
    assert [obj.n for obj in accessor] == [2, 0, 7]
    assert list(accessor) == []


def test_empty_and_bad_input():
    Account = make_class()
    assert startLazyUpdate(Account, None).done.is_set()  # nothing to convert
    with pytest.raises(PymoultTypeError, match="expected a class"):
        startLazyUpdate("Account", None)
    with pytest.raises(PymoultTypeError, match="transformer must be callable"):
        startLazyUpdate(Account, 5)


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
