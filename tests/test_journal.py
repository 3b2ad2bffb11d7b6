import types

import pytest

from pymoult.errors import PymoultTypeError, RollbackError, ThreadStateError
from pymoult.lowlevel.journal import (MISSING, Journal, Operation, SetAttribute, SetItem,
                                      current_journal, set_attribute)

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
