"""redirectPointer and redirect_references: every reference to an old object moved to the new
one, class attributes written through the class, weak references reported, large batches in one
heap pass, inside an outer stop-the-world window."""

import weakref

import pytest

from pymoult.lowlevel import redirection
from pymoult.lowlevel.redirection import redirectPointer
from pymoult.lowlevel.world import stop_the_world

pytestmark = pytest.mark.timeout(20)


def test_redirection_writes_class_attributes_through_the_class_and_reports_weakrefs():
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
    class Box:
        pass

    old, new = Box(), Box()
    holder = {"ref": old}
    with stop_the_world(0.5):
        report = redirectPointer(old, new)
    assert holder["ref"] is new
    assert not any("stop-the-world" in caveat for caveat in report.caveats)
