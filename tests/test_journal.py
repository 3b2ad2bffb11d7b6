import types

import pytest

from pymoult.errors import PymoultTypeError, RollbackError, ThreadStateError
from pymoult.lowlevel.journal import (MISSING, Journal, Operation, SetAttribute, SetItem,
                                      current_journal, describe, set_attribute)

pytestmark = pytest.mark.timeout(10)


def test_set_attribute_records_and_undoes_in_reverse_order():
    target = types.SimpleNamespace(a=1)
    journal = Journal("j")
    with journal.recording():
        assert current_journal() is journal
        set_attribute(target, "a", 2)
        set_attribute(target, "a", 3)
        set_attribute(target, "b", "new")
    assert current_journal() is None
    assert [str(op) for op in journal] == [
        "set namespace(a=2).a (was 1)",  # the text is fixed when the operation is recorded
        "set namespace(a=3).a (was 2)",
        "set namespace(a=3, b='new').b (new)",
    ]
    journal.rollback()
    assert target.a == 1 and not hasattr(target, "b")


def test_set_item_undo_restores_or_removes():
    mapping = {"k": 1}
    SetItem(mapping, "k", 1, 2).undo()
    assert mapping == {"k": 1}
    mapping["n"] = 5
    SetItem(mapping, "n", MISSING, 5).undo()
    assert mapping == {"k": 1}


def test_without_a_journal_mutations_are_applied_unrecorded():
    target = types.SimpleNamespace()
    set_attribute(target, "x", 1)
    assert target.x == 1


def test_journal_states_are_enforced():
    journal = Journal("j")
    journal.commit()
    with pytest.raises(ThreadStateError, match="journal 'j' is committed: cannot record"):
        journal.record(SetAttribute(object, "x", MISSING, 1))
    with pytest.raises(ThreadStateError, match="already committed"):
        journal.commit()
    journal.rollback()  # a committed update can still be undone, once
    with pytest.raises(ThreadStateError, match="already rolled back"):
        journal.rollback()
    with pytest.raises(PymoultTypeError, match="records Operation objects"):
        Journal().record("not an operation")
    with pytest.raises(PymoultTypeError, match="expected a Journal"):
        current_journal("j")


class Broken(Operation):
    text = "broken operation"

    def undo(self):
        raise OSError("cannot undo")


def test_rollback_undoes_everything_it_can_and_reports_the_rest():
    target = types.SimpleNamespace(a=1)
    journal = Journal("j")
    with journal.recording():
        set_attribute(target, "a", 2)
        journal.record(Broken())
        set_attribute(target, "a", 3)
    with pytest.raises(RollbackError, match=r"^1 of 3 operations of 'j' could not be undone: "
                                            r"broken operation$") as info:
        journal.rollback()
    assert target.a == 1  # the operations around the broken one were undone
    (operation, error), = info.value.failures
    assert isinstance(operation, Broken) and isinstance(error, OSError)
    assert "rolled back" in repr(journal)


def _classes(count):
    return [type(f"C{i}", (), {"a": i, "f": lambda self: 0}) for i in range(count)]


def test_settle_records_every_name_changed_outside_among_many_namespaces():
    # the names are compared in one pass over all the namespaces: each kind of change must
    # still be told, in the namespace it happened in, whichever its place among the others
    classes = _classes(6)
    module = types.ModuleType("watched_module")
    module.__dict__.update(kept=1, rebound=[1], removed=2, swapped_out=3)
    journal = Journal("j")
    watch = journal.watch([classes[0], module, *classes[1:], module])  # module given twice
    classes[2].a = 2  # the same value (small ints are one object): not a change
    classes[3].a = 1000 + int("3")  # another object
    classes[5].b = "new"
    del classes[4].f
    module.rebound = [1]  # equal, not the same object: a change
    del module.removed
    module.swapped_in = 4  # one name removed, one added: same size
    del module.swapped_out
    with journal.recording():
        set_attribute(classes[1], "a", "journaled")  # covered by its own operation
    added = watch.settle()
    assert sorted((describe(op.namespace), op.name, op.new is MISSING) for op in added) == [
        ("test_journal.C3", "a", False), ("test_journal.C4", "f", True),
        ("test_journal.C5", "b", False), ("watched_module", "rebound", False),
        ("watched_module", "removed", True), ("watched_module", "swapped_in", False),
        ("watched_module", "swapped_out", True)]
    journal.rollback()
    assert [c.a for c in classes] == [0, 1, 2, 3, 4, 5]
    assert "b" not in vars(classes[5]) and "f" in vars(classes[4])
    assert {k: v for k, v in vars(module).items() if not k.startswith("__")} == {
        "kept": 1, "rebound": [1], "removed": 2, "swapped_out": 3}


def test_settle_with_nothing_changed_records_nothing():
    classes = _classes(3)
    journal = Journal("j")
    watch = journal.watch([*classes, type("Empty", (), {})])
    assert watch.settle() == [] and len(journal) == 0


def test_settle_compares_a_module_whose_dict_changed_and_skips_one_left_alone():
    # a module's dict that kept its version tag is not compared: one changed next to it, in a
    # class or in another module, is still found, and a change undone is found to be none
    classes = _classes(3)
    left, changed, undone = (types.ModuleType(name) for name in ("left", "changed", "undone"))
    for module in (left, changed, undone):
        module.__dict__.update(a=1, b=[2])
    journal = Journal("j")
    watch = journal.watch([left, classes[0], changed, *classes[1:], undone])
    changed.a = 1000 + int("1")
    classes[1].a = "other"
    kept = undone.b
    undone.b = [2]
    undone.b = kept  # bound again to the same object: its dict's tag moved, nothing changed
    added = watch.settle()
    assert sorted((describe(op.namespace), op.name) for op in added) == [
        ("changed", "a"), ("test_journal.C1", "a")]
    journal.rollback()
    assert changed.a == 1 and classes[1].a == 1 and undone.b is kept


def test_settle_of_modules_left_alone_records_nothing():
    modules = [types.ModuleType(f"m{i}") for i in range(3)]
    journal = Journal("j")
    watch = journal.watch(modules)
    modules[1].__dict__.get("x")  # read only
    assert watch.settle() == [] and len(journal) == 0
    modules[2].late = 1  # after a settle, the next one still sees it
    assert [op.name for op in watch.settle()] == ["late"]
