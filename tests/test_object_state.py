"""Saving objects' own state before a transformer runs, and putting it back exactly: whatever
the transformer writes and however, whatever it raises; without giving inline objects a dict
and without a container per object."""

import gc
import sys

import pytest

from pymoult import _cpython
from pymoult.errors import TransformerError
from pymoult.lowlevel.data_access import startEagerUpdate
from pymoult.lowlevel.data_update import transform_all, updateToClass
from pymoult.lowlevel.journal import Journal
from pymoult.lowlevel.object_state import ObjectStates, slot_names

pytestmark = pytest.mark.timeout(60)


class Point:
    def __init__(self, n):
        self.n = n
        self.label = f"p{n}"


class Point2(Point):
    pass


class Other:
    pass


class Slotted:
    __slots__ = ("n", "__hidden")

    def __init__(self, n):
        self.n = n
        self.__hidden = -n


class Holder:
    kind = "default"  # a class default an instance may shadow

    def __init__(self, n):
        self.n = n
        self.meta = {"n": n}


class Interrupt(BaseException):
    pass


def state(obj):
    own = {}
    try:
        own = dict(object.__getattribute__(obj, "__dict__"))
    except AttributeError:
        pass
    slots = {}
    for name in slot_names(type(obj)):
        try:
            slots[name] = object.__getattribute__(obj, name)
        except AttributeError:
            slots[name] = "<unset>"
    return type(obj), own, slots


def _nasty(obj):
    """Every way of changing an object a transformer may use."""
    obj.added = 1
    vars(obj)["through_dict"] = 2
    object.__setattr__(obj, "n", -1)
    del obj.label
    obj.__class__ = Point2


WRITERS = {
    "setattr": lambda o: setattr(o, "n", -1),
    "vars()": lambda o: vars(o).__setitem__("n", -1),
    "object.__setattr__": lambda o: object.__setattr__(o, "added", 1),
    "delete": lambda o: delattr(o, "label"),
    "__class__": lambda o: setattr(o, "__class__", Point2),
    "__dict__ replaced": lambda o: setattr(o, "__dict__", {"n": 0}),
    "all at once": _nasty,
}


@pytest.mark.parametrize("raised", [ValueError("boom"), Interrupt("stop"),
                                    KeyboardInterrupt(), SystemExit(3)],
                         ids=["Exception", "custom BaseException", "KeyboardInterrupt",
                              "SystemExit"])
@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("at", ["first", "middle", "last"])
def test_a_transformer_failing_anywhere_leaves_every_object_as_it_was(writer, raised, at):
    objects = [Point(n) for n in range(9000)]  # several batches (PROGRESS_BATCH)
    objects[10].extra = "a different shape"
    objects[20].__dict__  # a dict made before (3.11/3.12)
    before = [state(o) for o in objects]
    failing = {"first": 0, "middle": 4500, "last": len(objects) - 1}[at]

    def transformer(obj):
        WRITERS[writer](obj)
        if obj is objects[failing]:
            raise raised

    expected = TransformerError if isinstance(raised, Exception) else type(raised)
    with pytest.raises(expected) as info:
        transform_all(objects, transformer, "test")
    if expected is TransformerError:
        assert info.value.__cause__ is raised and info.value.index == failing
    else:
        assert info.value is raised  # re-raised as itself, after the restore
    assert [state(o) for o in objects] == before


def test_slots_private_names_and_mixed_classes_are_restored():
    objects = [Slotted(n) for n in range(50)] + [Point(n) for n in range(50)] + [Other()]
    del objects[3].n  # an unset slot
    before = [state(o) for o in objects]

    def transformer(obj):
        if isinstance(obj, Slotted):
            obj.n = 99
            obj._Slotted__hidden = 0
        else:
            obj.x = 1
        if obj is objects[-1]:
            raise Interrupt()

    with pytest.raises(Interrupt):
        transform_all(objects, transformer, "test")
    assert [state(o) for o in objects] == before


def test_shadowed_class_defaults_are_told_from_the_objects_own_values():
    objects = [Holder(n) for n in range(100)]
    for obj in objects[::2]:
        obj.kind = f"own {obj.n}"
    objects[1].kind = Holder.kind  # the very object of the class default, held by the instance
    before = [state(o) for o in objects]

    def transformer(obj):
        obj.kind = "changed"
        obj.meta = None
        if obj is objects[-1]:
            raise ValueError

    with pytest.raises(TransformerError):
        transform_all(objects, transformer, "test")
    assert [state(o) for o in objects] == before
    assert "kind" not in vars(objects[3])  # no class default copied into an instance


class Fresh(Point):
    pass


def test_rollback_of_the_journal_after_success_restores_everything():
    objects = [Fresh(n) for n in range(5000)]
    before = [state(o) for o in objects]
    journal = Journal("eager")

    def nasty(obj):
        _nasty(obj)
        obj.__class__ = Point

    with journal.recording():
        assert startEagerUpdate(Fresh, nasty, subclasses=False) == 5000
    assert all(type(o) is Point and o.n == -1 for o in objects)
    journal.rollback()
    assert [state(o) for o in objects] == before


def test_update_to_class_restores_on_a_base_exception():
    obj = Point(1)
    before = state(obj)

    def transformer(o):
        vars(o)["n"] = 5
        raise Interrupt()

    with pytest.raises(Interrupt):
        updateToClass(obj, Point, Point2, transformer)
    assert state(obj) == before


@pytest.mark.skipif(not _cpython.ATTRIBUTES_INLINE, reason="3.10 objects always have a dict")
def test_a_successful_conversion_leaves_the_objects_inline():
    class Inline:  # a class of its own: other tests' writes change Point's shared keys
        def __init__(self, n):
            self.n = n
            self.label = str(n)

    objects = [Inline(n) for n in range(5000)]
    transform_all(objects, lambda o: setattr(o, "double", 2 * o.n), "test")
    with_dict = [o for o in objects
                 if any(isinstance(r, dict) for r in gc.get_referents(o))]
    assert len(with_dict) <= 1  # the one object read to learn the attribute names


def test_saving_makes_no_container_per_object():
    objects = [Holder(n) for n in range(20000)]
    gc.collect()
    tracked = len(gc.get_objects())
    states = ObjectStates("test")
    for start in range(0, len(objects), 4096):
        states.take(objects[start:start + 4096])
    assert len(gc.get_objects()) - tracked < 200
    assert len(states) == 20000
    del states


def test_objects_of_an_unusual_shape_are_saved_whole_and_restored():
    class Odd:
        def __getattr__(self, name):
            raise AttributeError(name)

    objects = [Odd() for _ in range(10)]
    for n, obj in enumerate(objects):
        obj.n = n
    before = [state(o) for o in objects]
    with pytest.raises(TransformerError):
        transform_all(objects, lambda o: (setattr(o, "n", None), 1 / (o is not objects[-1])),
                      "test")
    assert [state(o) for o in objects] == before
    assert sys.getrefcount(objects[0]) > 1


class Pair:
    def __init__(self, n):
        self.a = n
        self.b = {"n": n}  # a dict held by the object: its own value, not a made __dict__


class Single:
    def __init__(self, n):
        self.a = n


class Empty:
    def __init__(self, n):
        pass


def _shapes(cls, count=600):
    """Instances of ``cls`` in every shape the bulk check must tell apart: a made __dict__,
    extra attributes (a class, a dict, another object's __dict__ among their values), a
    dict-valued or class-valued attribute where a learnt one stands."""
    objects = [cls(n) for n in range(count)]
    for index in range(7, count, 50):
        objects[index].__dict__  # a dict made (3.11/3.12)
    for index in range(11, count, 50):
        objects[index].extra = cls  # an extra value that is a class: where a class stands
    for index in range(13, count, 50):
        objects[index].extra, objects[index].more = {}, vars(objects[index - 6])
    for index in range(17, count, 50):
        vars(objects[index])["extra"] = 1  # a made dict with an extra name
    if "a" in vars(cls(0)):
        for index in range(19, count, 50):
            objects[index].a = cls
        for index in range(23, count, 50):
            objects[index].a = vars(objects[index])  # its own dict as its value
    return objects


@pytest.mark.parametrize("cls", [Pair, Single, Empty], ids=["two names", "one name", "none"])
@pytest.mark.parametrize("first_odd", [False, True], ids=["usual first", "odd first"])
def test_every_shape_in_a_batch_is_restored_exactly(cls, first_odd):
    objects = _shapes(cls)
    if first_odd:
        objects.insert(0, objects.pop(11))  # the shape is learnt from an odd object
    before = [state(o) for o in objects]
    held = [dict(o.b) if isinstance(o, Pair) and isinstance(o.b, dict) else None
            for o in objects]

    def transformer(obj):
        for name in ("extra", "more"):
            try:
                delattr(obj, name)
            except AttributeError:
                pass
        obj.a = obj.b = None
        if obj is objects[-1]:
            raise Interrupt()

    with pytest.raises(Interrupt):
        transform_all(objects, transformer, "test")
    assert [state(o) for o in objects] == before
    # the dicts held are the same objects, with what they held (the transformer did not
    # change their contents: those are not the objects' own state and are not saved)
    assert [dict(o.b) if isinstance(o, Pair) and isinstance(o.b, dict) else None
            for o in objects] == held


def test_a_dict_held_is_put_back_but_changes_inside_it_are_not_undone():
    """The contract for containers an object holds: the reference is the object's own state
    and is restored; what the container holds is not (module notes of object_state)."""
    objects = [Pair(n) for n in range(5000)]
    held = [o.b for o in objects]

    def transformer(obj):
        obj.b["seen"] = True  # inside the dict held
        obj.b = {}  # the object's own attribute
        if obj is objects[-1]:
            raise ValueError

    with pytest.raises(TransformerError):
        transform_all(objects, transformer, "test")
    assert all(o.b is d for o, d in zip(objects, held))
    assert all(d.get("seen") is True for d in held)


def test_an_odd_first_object_does_not_slow_the_batches_after_it(monkeypatch):
    objects = [Point(n) for n in range(3 * 4096)]
    objects[0].extra = 1  # read first: its shape is learnt first
    seen = []
    one_by_one = ObjectStates._one_by_one
    monkeypatch.setattr(ObjectStates, "_one_by_one",
                        lambda self, *args: seen.append(1) or one_by_one(self, *args))
    states = ObjectStates("test")
    for start in range(0, len(objects), 4096):
        states.take(objects[start:start + 4096])
    assert len(states) == len(objects)
    assert len(seen) == 1  # the first batch only: the usual shape is tried first after it
    assert len(states._whole) == 2  # the odd object and one of the usual shape, read to learn it


class Listed(list):
    def __init__(self, n):
        super().__init__([n, -n])
        self.a, self.b, self.c = n, n + 1, n + 2


def test_objects_of_a_builtin_base_are_restored_exactly():
    # a list subclass gives its items as referents too: with a made dict and two items, the
    # counts of the inline check would add up while the dict hides an attribute more
    objects = [Listed(n) for n in range(300)]
    for obj in objects[1::3]:
        vars(obj)["extra"] = "kept"
    before = [(state(o), list(o)) for o in objects]

    def transformer(obj):
        obj.a = None
        if obj is objects[-1]:
            raise ValueError

    with pytest.raises(TransformerError):
        transform_all(objects, transformer, "test")
    assert [(state(o), list(o)) for o in objects] == before


@pytest.mark.parametrize("enabled", [True, False], ids=["collector on", "collector off"])
@pytest.mark.parametrize("outcome", ["success", "Exception", "BaseException", "toggles"])
def test_the_collector_is_paused_then_put_back_as_it_was(enabled, outcome):
    objects = [Holder(n) for n in range(10000)]
    collections, first, during = [], [], []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    def transformer(obj):
        obj.meta = {"n": [obj.n]}  # a tracked container per object: collections otherwise
        assert not gc.isenabled()
        if obj is objects[0]:  # a collection due before the pause may run before it began
            first.append(len(collections))
        if obj is objects[-1]:
            during.append(len(collections) - first[0])  # none while converting
        if outcome == "toggles" and obj is objects[-1]:
            (gc.disable if enabled else gc.enable)()
        if obj is objects[-1] and outcome == "Exception":
            raise ValueError
        if obj is objects[-1] and outcome == "BaseException":
            raise Interrupt()

    was = gc.isenabled()
    gc.collect()  # the allocations above may have made a collection due
    (gc.enable if enabled else gc.disable)()
    gc.callbacks.append(count)
    try:
        try:
            transform_all(objects, transformer, "test")
        except (TransformerError, Interrupt):
            assert outcome in ("Exception", "BaseException")
        else:
            assert outcome in ("success", "toggles")
        assert gc.isenabled() is enabled
        assert during == [0]
    finally:
        gc.callbacks.remove(count)
        (gc.enable if was else gc.disable)()


def test_a_large_conversion_leaves_a_few_long_lists_not_a_few_per_batch():
    # hundreds of young lists holding the saved objects would start a collection as soon as
    # the conversion ends, and it would traverse every saved object
    objects = [Point(n) for n in range(50 * 4096)]
    was = gc.isenabled()
    gc.collect()
    gc.disable()  # nothing moves out of the young generation while it is counted
    try:
        young = len(gc.get_objects(generation=0))
        states = transform_all(objects, lambda o: None, "test")
        assert len(gc.get_objects(generation=0)) - young < 50  # 2 per batch would be 100
        assert len(states) == len(objects)
    finally:
        if was:
            gc.enable()
