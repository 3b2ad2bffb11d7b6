import dataclasses
import pickle
import sys
import textwrap
import threading
import types

import pytest

from pymoult.errors import ConversionError, PymoultTypeError, TargetNotFoundError, TransformerError
from pymoult.lowlevel.data_access import startEagerUpdate
from pymoult.lowlevel.data_update import (PROGRESS_BATCH, addFieldToClass, addMethodToClass,
                                          applyMixinToObject, generateMixinUser, redefineClass,
                                          updateToClass)
from pymoult.lowlevel.journal import Journal

pytestmark = pytest.mark.timeout(20)
WAIT = 5.0


def load(source, name):
    """A fresh module from source, registered in sys.modules (so pickle can find its classes)."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


@pytest.fixture
def geo(request):
    names = []

    def make(source, name):
        names.append(name)
        return load(source, name)

    yield make
    for name in names:
        sys.modules.pop(name, None)


OLD = """
class Base:
    def hi(self):
        return "base"
class Point(Base):
    KIND = "p"
    def __init__(self, x):
        self.x = x
    def norm(self):
        return abs(self.x)
    def gone(self):
        return 1
class Sub(Point):
    pass
"""

NEW = """
class Base:
    def hi(self):
        return "NEW base (must not be used)"
class Point(Base):
    KIND = "point"
    def __init__(self, x, y=0):
        self.x = x
        self.y = y
    def norm(self):
        return abs(self.x) + abs(getattr(self, "y", 0))
    def hi(self):
        return "point of " + super().hi()
"""


def test_class_updated_in_place_keeps_identity_instances_and_bound_methods(geo):
    old, new = geo(OLD, "geo_a"), geo(NEW, "geo_a_v2")
    Point = old.Point
    p, s = old.Point(-3), old.Sub(-4)
    bound = p.norm
    assert redefineClass(old, "Point", new.Point) is Point
    assert old.Point is Point and isinstance(p, Point) and isinstance(s, Point)
    assert bound() == 3 and p.norm() == 3  # new code (no y yet: getattr default)
    assert Point(1, -2).norm() == 3  # new __init__
    assert p.hi() == "point of base" and s.hi() == "point of base"  # super() on the live Base
    assert Point.KIND == "point" and not hasattr(p, "gone")
    assert pickle.loads(pickle.dumps(p)).norm() == 3


def test_class_update_rollback_is_exact(geo):
    old, new = geo(OLD, "geo_b"), geo(NEW, "geo_b_v2")
    p = old.Point(-3)
    journal = Journal()
    with journal.recording():
        redefineClass(old, old.Point, new.Point)
    journal.rollback()
    assert old.Point.KIND == "p" and p.gone() == 1 and p.hi() == "base"
    assert not hasattr(old.Point, "hi") or "hi" not in old.Point.__dict__
    with pytest.raises(TypeError):
        old.Point(1, 2)  # the old __init__ again


def test_layout_change_replaces_the_class_and_converts_every_instance(geo):
    old = geo(OLD, "geo_c")
    slotted = geo("""
    class Point:
        __slots__ = ("x", "tag")
        def norm(self):
            return abs(self.x)
    """, "geo_c_v2")
    points = [old.Point(-1), old.Point(-2)]
    by_name = {"first": points[0]}
    holder = old.Base()
    holder.point = points[1]
    journal = Journal()
    with journal.recording():
        bound = redefineClass(old, "Point", slotted.Point,
                              transformer=lambda p: setattr(p, "tag", "v2"))
    assert bound is slotted.Point and old.Point is slotted.Point
    assert all(type(p) is slotted.Point and p.tag == "v2" for p in points)  # the list followed
    assert by_name["first"] is points[0] and holder.point is points[1]
    conversion = journal.operations[1]
    assert str(conversion).startswith("replace 2 geo_c.Point objects by geo_c_v2.Point")
    assert any("subclass geo_c.Sub still derives from the old class" in m
               for m in conversion.report.missed)
    journal.rollback()
    assert old.Point.KIND == "p" and all(type(p) is old.Point for p in points)
    assert holder.point is points[1] and type(holder.point) is old.Point


def test_replacing_a_class_reports_how_many_instances_were_rebuilt(geo):
    old = geo(OLD, "geo_progress")
    slotted = geo("class Point:\n    __slots__ = ('x', 'y')\n", "geo_progress_v2")
    points = [old.Point(i) for i in range(PROGRESS_BATCH + 1)]
    journal = Journal()
    with journal.recording():
        redefineClass(old, "Point", slotted.Point)
    assert journal.progress == {"step": "rebuild instances of geo_progress.Point",
                                "done": len(points), "total": len(points)}
    journal.rollback()


def test_failed_replacement_changes_nothing(geo):
    old = geo(OLD, "geo_d")
    slotted = geo("class Point:\n    __slots__ = ('x',)\n", "geo_d_v2")
    points = [old.Point(1), old.Point(2), old.Point(3)]
    seen = []

    def transformer(p):
        seen.append(p)
        if len(seen) == 2:
            raise LookupError("bad point")

    with pytest.raises(TransformerError) as info:
        redefineClass(old, "Point", slotted.Point, transformer=transformer)
    assert info.value.index == 1 and info.value.count == 3
    assert old.Point.KIND == "p" and all(type(p) is old.Point for p in points)
    with pytest.raises(TargetNotFoundError, match="has no class 'Nope'"):
        redefineClass(old, "Nope", slotted.Point)


def test_in_place_update_with_a_transformer_is_recorded(geo):
    old, new = geo(OLD, "geo_e"), geo(NEW, "geo_e_v2")
    points = [old.Point(1), old.Sub(2)]
    journal = Journal()
    with journal.recording():
        redefineClass(old, "Point", new.Point, transformer=lambda p: setattr(p, "y", 10))
    assert [p.norm() for p in points] == [11, 12]
    journal.rollback()
    assert not any(hasattr(p, "y") for p in points) and points[0].norm() == 1


def test_dataclass_gains_a_field(geo):
    old = geo("from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\n", "dc_a")
    new = geo("from dataclasses import dataclass\n@dataclass\n"
              "class P:\n    x: int\n    y: int = 0\n", "dc_a_v2")
    p = old.P(1)
    redefineClass(old, "P", new.P)
    p.y = 0  # what a transformer does for the existing instances
    assert old.P(2) == old.P(2, 0) and repr(p) == "P(x=1, y=0)"
    assert [f.name for f in __import__("dataclasses").fields(p)] == ["x", "y"]


# -- converting objects ------------------------------------------------------------------------


class Plain:
    def __init__(self, x):
        self.x = x


class Plain2:
    def double(self):
        return 2 * self.x


class Slotted:
    __slots__ = ("x", "label")

    def double(self):
        return 2 * self.x


def test_update_to_class_with_a_recorded_transformer_and_rollback():
    obj = Plain(3)
    journal = Journal()
    with journal.recording():
        same = updateToClass(obj, Plain, Plain2, lambda o: setattr(o, "y", o.x + 1))
    assert same is obj and type(obj) is Plain2 and obj.double() == 6 and obj.y == 4
    assert [str(op) for op in journal] == [
        "convert a test_data_update.Plain to test_data_update.Plain2",
        "transform to test_data_update.Plain2: state of 1 objects saved"]
    journal.rollback()
    assert type(obj) is Plain and not hasattr(obj, "y") and obj.x == 3


def test_failing_transformer_leaves_the_object_as_it_was():
    obj = Plain(3)

    def broken(o):
        o.x = 99
        raise KeyError("nope")

    with pytest.raises(TransformerError, match="raised KeyError") as info:
        updateToClass(obj, Plain, Plain2, broken)
    assert info.value.obj is obj and isinstance(info.value.__cause__, KeyError)
    assert type(obj) is Plain and obj.x == 3


def make_reader(value):
    return lambda: value


def test_layout_change_builds_a_new_object_and_redirects_references():
    obj = Plain(5)
    holder = Plain(None)
    holder.ref = obj
    in_list, in_dict, in_tuple = [1, obj], {"k": obj}, (obj,)
    module = types.ModuleType("holder_mod")
    module.global_ref = obj
    cell_holder = make_reader(obj)  # a closure cell in another frame
    inside, go, seen = threading.Event(), threading.Event(), []

    def running(local_ref):
        inside.set()
        go.wait(WAIT)
        seen.append(local_ref)

    thread = threading.Thread(target=running, args=(obj,), daemon=True)
    thread.start()
    assert inside.wait(WAIT)
    journal = Journal()
    with journal.recording():
        new = updateToClass(obj, Plain, Slotted, lambda o: setattr(o, "label", "converted"))
    go.set()
    thread.join(WAIT)
    assert type(new) is Slotted and new.x == 5 and new.label == "converted"
    assert holder.ref is new and in_list[1] is new and in_dict["k"] is new
    assert module.global_ref is new and cell_holder() is new and seen == [new]
    assert in_tuple[0] is obj  # immutable: reported, not pretended
    conversion = journal.operations[0]
    assert any("tuple" in missed for missed in conversion.report.missed)
    journal.rollback()
    assert holder.ref is obj and in_list[1] is obj and in_dict["k"] is obj
    assert module.global_ref is obj and cell_holder() is obj


def test_builtin_layout_needs_a_builder():
    from collections import namedtuple

    Pair = namedtuple("Pair", "x y")
    obj = Plain(1)
    with pytest.raises(ConversionError, match=r"its __new__ needs arguments \(pass a builder"):
        updateToClass(obj, Plain, Pair)
    with pytest.raises(ConversionError, match="returned 3, not a"):
        updateToClass(obj, Plain, Pair, builder=lambda o: 3)
    keep = [obj]
    new = updateToClass(obj, Plain, Pair, builder=lambda o: Pair(o.x, 0))
    assert keep[0] is new and new == (1, 0)


def test_conversion_input_errors():
    with pytest.raises(PymoultTypeError, match="is not an instance of"):
        updateToClass(Plain(1), Plain2, Plain)
    with pytest.raises(PymoultTypeError, match="transformer must be callable"):
        updateToClass(Plain(1), Plain, Plain2, 3)
    with pytest.raises(PymoultTypeError, match="new_cls must be a class"):
        updateToClass(Plain(1), Plain, "Plain2")


# -- fields, methods, mixins ---------------------------------------------------------------------


def test_add_field_method_and_mixins():
    class Animal:
        def sound(self):
            return "..."

    class Dog(Animal):
        pass

    class Loud:
        def shout(self):
            return self.sound().upper() + "!"

    class NewDog(Animal):  # the new version's class body: its super() names NewDog
        def sound(self):
            return "woof, not " + super().sound()

    journal = Journal()
    with journal.recording():
        addFieldToClass(Dog, "legs", 4)
        addMethodToClass(Dog, "sound", NewDog.__dict__["sound"])
    dog = Dog()
    assert dog.legs == 4 and dog.sound() == "woof, not ..."
    LoudDog = generateMixinUser(Dog, Loud)
    assert LoudDog.__name__ == "Dog" and issubclass(LoudDog, Dog)
    other = Dog()
    assert applyMixinToObject(other, Loud).__mro__[1] is Loud
    assert other.shout() == "WOOF, NOT ...!"
    journal.rollback()
    assert not hasattr(Dog, "legs") and Dog().sound() == "..."
    with pytest.raises(Exception, match="needs at least one mixin"):
        generateMixinUser(Dog)


def test_converting_reads_the_old_state_without_running_the_class_getattr():
    from pymoult.lowlevel.data_update import updateToClass

    class Old:  # slots only: no __dict__, so hasattr(old, "__dict__") would call __getattr__
        __slots__ = ("a",)

        def __getattr__(self, name):
            raise TypeError(f"__getattr__ must not run during a conversion ({name})")

    class New:
        __slots__ = ("a", "b")

    old = Old()
    old.a = 1
    new = updateToClass(old, Old, New)
    assert new.a == 1


def test_slotted_class_updated_in_place_keeps_working(geo):
    src = "class P:\n    __slots__ = ('x',)\n    def __init__(self, x):\n        self.x = x\n"
    old = geo(src + "    def get(self):\n        return self.x\n", "slots_a")
    new = geo(src + "    def get(self):\n        return self.x * 10\n", "slots_a_v2")
    p = old.P(2)
    redefineClass(old, "P", new.P)
    assert p.get() == 20 and old.P(3).get() == 30


def test_failing_transformer_of_an_in_place_class_update_changes_nothing(geo):
    old = geo("class C:\n    def f(self):\n        return 'v1'\n", "inplace_a")
    new = geo("class C:\n    def f(self):\n        return 'v2'\n", "inplace_a_v2")
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


@(dataclasses.dataclass(frozen=True, slots=True) if hasattr(dataclasses, "KW_ONLY")
  else (lambda c: c))
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
