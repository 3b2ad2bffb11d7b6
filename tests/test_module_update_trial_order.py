"""ModuleUpdate: the new version is evaluated in order, as it is built. A statement sees what the
statements above it bound, also through the module's unchanged functions; statements the old
version did not have run once (on trial in a copy, then when applied), so a new version that
raises changes nothing; changed statements that are not definitions are noted, not run again."""

import sys

import pytest

from pymoult.errors import ModuleUpdateError
from pymoult.highlevel.updates import ModuleUpdate, UpdateState

from modules import EXACT_FLOWS, WAIT, loaded, update_to

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("flow")]

# bottle 0.12 -> 0.13 in small: a new method of a class, used at module level through an
# unchanged helper that reads the class from the module's globals
BOTTLE_V1 = """\
class Bottle:
    def get(self, path):
        return ("GET", path)


def make_default_app_wrapper(name):
    return getattr(Bottle, name)


get = make_default_app_wrapper("get")
"""

BOTTLE_V2 = """\
class Bottle:
    def get(self, path):
        return ("GET", path)

    def patch(self, path):
        return ("PATCH", path)


def make_default_app_wrapper(name):
    return getattr(Bottle, name)


get = make_default_app_wrapper("get")
patch = make_default_app_wrapper("patch")
"""


def test_a_new_method_is_seen_by_a_later_statement_through_an_unchanged_function(
        tmp_path, manager):
    app = loaded(tmp_path, BOTTLE_V1)
    bottle, cls, get, helper = app.Bottle(), app.Bottle, app.get, app.make_default_app_wrapper
    update = ModuleUpdate(app, source=BOTTLE_V2)  # was: "type object 'Bottle' has no attribute"
    assert not hasattr(app.Bottle, "patch")  # on trial: nothing changed yet
    listing = [str(step) for step in update.steps]
    assert f"update class {app.__name__}.Bottle (line 1)" in listing
    assert f"add function {app.__name__}.patch (line 14)" in listing
    manager.apply_update(update, timeout=WAIT)
    assert update.state is UpdateState.APPLIED
    assert app.Bottle is cls and app.make_default_app_wrapper is helper and app.get is get
    assert app.patch(bottle, "/x") == ("PATCH", "/x")  # the live class's new method
    assert app.patch is cls.__dict__["patch"]
    assert bottle.patch("/y") == ("PATCH", "/y") and get(bottle, "/z") == ("GET", "/z")


def test_a_statement_sees_a_constant_changed_above_it_through_an_unchanged_function(
        tmp_path, manager):
    app = loaded(tmp_path, "SIZE = 2\n\n\ndef doubled():\n    return SIZE * 2\n\n\n"
                           "TABLE = [0] * doubled()\n")
    doubled, table = app.doubled, app.TABLE
    update_to(manager, app, "SIZE = 3\n\n\ndef doubled():\n    return SIZE * 2\n\n\n"
                            "TABLE = [0] * doubled()\nWIDTH = doubled() + 1\n")
    assert app.WIDTH == 7  # the new SIZE, as a fresh import would give
    assert app.TABLE == [0] * 4 and app.TABLE is table  # an unchanged statement is not re-run
    assert app.doubled is doubled and doubled() == 6


RAISING_V1 = """\
calls = []


def f():
    return "f1"


def g():
    return "g1"
"""

RAISING_V2 = """\
calls = []


def f():
    return "f2"


calls.append("started")
raise RuntimeError("boom")


def g():
    return "g2"
"""


def test_a_new_version_that_raises_at_module_level_changes_nothing(tmp_path):
    app = loaded(tmp_path, RAISING_V1)
    f, g, calls = app.f, app.g, app.calls
    with pytest.raises(ModuleUpdateError, match=r"raised RuntimeError\('boom'\) while being "
                                                r"evaluated \(line 9\); nothing was changed") \
            as caught:
        ModuleUpdate(app, source=RAISING_V2)
    assert caught.value.lineno == 9
    trace = caught.value.traceback
    assert 'line 9' in trace and 'raise RuntimeError("boom")' in trace  # the new version's line
    assert "module_update.py" not in trace  # the user's code only
    assert f() == "f1" and g() == "g1" and app.f is f and app.g is g
    assert calls == [] and app.calls is calls  # the statement above it ran on a copy


def test_a_new_statement_runs_once_in_order_when_applied(tmp_path, manager):
    app = loaded(tmp_path, "calls = []\n\n\ndef f():\n    return 1\n")
    calls, f = app.calls, app.f
    update = ModuleUpdate(app, source="calls = []\n\n\ndef f():\n    return 2\n\n\n"
                                      "calls.append(f())\n")
    assert calls == []  # on trial, it appended to a copy
    assert [str(s) for s in update.steps][-1] == \
        f"run {app.__name__}.<module code> (line 8): new module-level statement, run once"
    manager.apply_update(update, timeout=WAIT)
    assert app.calls is calls and calls == [2]  # once, after the new f above it
    assert f() == 2


def test_names_bound_by_a_new_statement_are_added(tmp_path, manager):
    app = loaded(tmp_path, "import sys\n\nDEBUG = False\n")
    update = update_to(manager, app, "import sys\n\nDEBUG = False\n\n"
                                     "if sys.platform:\n    MODE = 'real'\nelse:\n"
                                     "    MODE = 'none'\n")
    assert app.MODE == "real"
    assert f"add name {app.__name__}.MODE (line 5)" in [str(s) for s in update.steps]


# untracked: a statement binding nothing is undecided (tested in test_module_update_untracked)
@pytest.mark.parametrize("flow", EXACT_FLOWS, indirect=True)
def test_a_changed_statement_that_is_not_a_definition_is_noted_not_run(tmp_path, manager):
    app = loaded(tmp_path, "calls = []\ncalls.append('init')\n\n\ndef f():\n    return 1\n")
    calls, f = app.calls, app.f
    update = update_to(manager, app, "calls = []\ncalls.append('init again')\n\n\n"
                                     "def f():\n    return 2\n")
    assert calls == ["init"] and app.calls is calls
    assert f() == 2
    notes = [str(s) for s in update.steps if s.action == "note"]
    assert notes == [f"note {app.__name__}.<module code> (line 2): changed module-level "
                     "statement not run again (module code runs once; its state is kept)"]


# untracked: whether a call is new cannot be told from the live module
@pytest.mark.parametrize("flow", EXACT_FLOWS, indirect=True)
def test_a_changed_statement_and_an_added_one_in_the_same_span(tmp_path, manager):
    app = loaded(tmp_path, "calls = []\ncalls.append('a')\n")
    calls = app.calls
    update = update_to(manager, app, "calls = []\ncalls.append('b')\ncalls.append('c')\n")
    assert calls == ["a", "c"]  # the first is a change of the old one, the second is new
    assert [s.action for s in update.steps] == ["note", "run"]


def test_a_failing_update_undoes_what_a_new_statement_bound(tmp_path, manager):
    app = loaded(tmp_path, "import sys\n\n\ndef f():\n    return 1\n")
    f = app.f

    def fail(update):
        raise RuntimeError("step failed")
    update = ModuleUpdate(app, source="import sys\n\n\ndef f():\n    return 2\n\n\n"
                                      "if sys.platform:\n    EXTRA = f()\n", steps=[fail])
    with pytest.raises(RuntimeError, match="step failed"):
        manager.apply_update(update, timeout=WAIT)
    assert not hasattr(app, "EXTRA") and f() == 1 and app.f is f


def test_a_failed_trial_leaves_all_and_annotations_alone(tmp_path):
    app = loaded(tmp_path, "__all__ = ['f']\nLIMIT: int = 1\n\n\ndef f():\n    return 1\n")
    exported, annotations = list(app.__all__), dict(app.__annotations__)
    with pytest.raises(ModuleUpdateError, match=r"raised ValueError\('late'\).*\(line 4\)"):
        ModuleUpdate(app, source="__all__ = ['f']\nLIMIT: int = 1\n__all__.append('g')\n"
                                 "raise ValueError('late')\nNAME: str\n\n\ndef f():\n"
                                 "    return 2\n")
    assert app.__all__ == exported and app.__annotations__ == annotations and app.f() == 1


def test_a_new_annotation_without_value_is_recorded_once(tmp_path, manager):
    app = loaded(tmp_path, "LIMIT: int = 1\n")
    annotations = app.__annotations__
    update_to(manager, app, "LIMIT: int = 1\nNAME: str\n")
    assert app.__annotations__ is annotations
    assert annotations == {"LIMIT": int, "NAME": str} and not hasattr(app, "NAME")


@pytest.mark.parametrize("new", ["NAME: str\n", "NAME: str = 'x'\n",
                                 "if NAMED:\n    NAME: str = 'x'\n"])
def test_new_annotations_keep_the_unread_ones(tmp_path, manager, new):
    # 3.14 (PEP 649): nobody read the annotations, so they are not in the module's dict; run
    # alone, the new statement binds its own ``__annotate__``, which replaced the module's
    app = loaded(tmp_path, "NAMED = True\nLIMIT: int = 1\nOTHER: float = 2.0\n")
    own = {k: v for k, v in vars(app).items() if k.startswith("__") and k != "__annotations__"}
    update_to(manager, app, "NAMED = True\nLIMIT: int = 1\nOTHER: float = 2.0\n" + new)
    assert app.__annotations__ == {"LIMIT": int, "OTHER": float, "NAME": str}
    assert list(app.__annotations__) == ["LIMIT", "OTHER", "NAME"]
    # nothing of the statement's own is left: the module's ``__annotate__`` stays
    assert {k: v for k, v in vars(app).items()
            if k.startswith("__") and k != "__annotations__"} == own


@pytest.mark.skipif(sys.version_info < (3, 14), reason="annotations evaluated when run before")
def test_a_new_annotation_may_name_a_class_defined_below(tmp_path, manager):
    app = loaded(tmp_path, "LIMIT: int = 1\n")
    update_to(manager, app, "LIMIT: int = 1\nNAME: Later\n\n\nclass Later:\n    pass\n")
    assert app.__annotations__ == {"LIMIT": int, "NAME": app.Later}


@pytest.mark.parametrize("read", [True, False], ids=["read before", "unread"])
def test_a_rolled_back_update_leaves_annotations_as_they_were(tmp_path, manager, read):
    app = loaded(tmp_path, "LIMIT: int = 1\nOTHER: float = 2.0\n")
    annotations = app.__annotations__ if read else None
    namespace = dict(vars(app))

    def fail(update):
        raise RuntimeError("step failed")
    update = ModuleUpdate(app, source="LIMIT: int = 1\nOTHER: float = 2.0\nNAME: str\n"
                                      "EXTRA: int = 3\n", steps=[fail])
    with pytest.raises(RuntimeError, match="step failed"):
        manager.apply_update(update, timeout=WAIT)
    assert vars(app) == namespace and not hasattr(app, "EXTRA")
    assert app.__annotations__ == {"LIMIT": int, "OTHER": float}
    if read:
        assert app.__annotations__ is annotations


def test_a_new_main_guard_is_noted_not_run_even_in_the_main_module(tmp_path, manager):
    app = loaded(tmp_path, "calls = []\n\n\ndef main():\n    calls.append('main')\n")
    calls = app.calls
    app.__name__ = "__main__"  # as the script run by `pymoult run app.py`
    try:
        update = ModuleUpdate(app, source="calls = []\n\n\ndef main():\n    calls.append('main')\n"
                                          "\n\nif __name__ == '__main__':\n    main()\n")
        manager.apply_update(update, timeout=WAIT)
    finally:
        app.__name__ = app.__spec__.name
    assert calls == []
    assert [str(s) for s in update.steps] == [
        "note __main__.<module code> (line 8): `if __name__ == '__main__'` block not run (the "
        "program's entry point, not module code)"]


# a changed dict literal: the live module cannot tell an edit from state
@pytest.mark.parametrize("flow", EXACT_FLOWS, indirect=True)
def test_later_statements_see_the_live_objects_earlier_ones_updated(tmp_path, manager):
    app = loaded(tmp_path, """
class Base:
    def hello(self):
        return "base v1"

def handle():
    return 1

HANDLERS = {"a": handle}
""")
    Base = app.Base
    update_to(manager, app, """
class Base:
    def hello(self):
        return "base v2"

class Child(Base):
    pass

def handle():
    return 2

HANDLERS = {"a": handle, "b": handle}
""")
    assert app.Child.__bases__ == (Base,) and isinstance(app.Child(), Base)
    assert app.HANDLERS["a"] is app.handle and app.HANDLERS["b"]() == 2
