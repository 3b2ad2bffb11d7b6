import dataclasses
import threading

import pytest

from pymoult.errors import PymoultTypeError, TransformerError
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
