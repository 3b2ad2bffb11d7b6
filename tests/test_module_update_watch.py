"""Which namespaces a ModuleUpdate has the manager watch for changes made outside Pymoult's
mechanisms: its modules only when applying it runs none of the program's code (a function's
body edited), else its modules and their classes too, so that a decorator or a class body that
changes a class by hand is undone with the update."""

import textwrap

import pytest

from pymoult.errors import ModuleUpdateError
from pymoult.highlevel.updates import ModuleUpdate, UpdateState

from modules import WAIT, loaded

pytestmark = pytest.mark.timeout(30)

V1 = """
calls = {}


def mark(function):
    Item.kind = "marked"  # by hand, not through Pymoult
    return function


def fail_when_applied(function):
    calls[function.__name__] = calls.get(function.__name__, 0) + 1
    if calls[function.__name__] > 1:  # the first call is the trial's
        raise RuntimeError("applied")
    return function


class Item:
    kind = "plain"


def work(x, scale=2):
    return x * scale


def helper():
    return 1


LIMIT = 3
"""


def new_version(old, new):
    source = textwrap.dedent(V1)
    assert old in source
    return source.replace(old, new)


@pytest.fixture
def app(tmp_path):
    return loaded(tmp_path, V1)


def test_a_body_edit_has_only_the_module_watched(app, manager):
    update = ModuleUpdate(app, source=new_version("return x * scale", "return x * scale + 1"))
    assert update.watched() == [app]
    manager.apply_update(update, timeout=WAIT)
    assert app.work(1) == 3


@pytest.mark.parametrize("old, new", [
    ("def work(x, scale=2):", "@mark\ndef work(x, scale=2):"),  # a decorator runs
    ("def work(x, scale=2):", "def work(x, scale=int(2)):"),  # a default calls
    ("def work(x, scale=2):", "def work(x, scale=Item.kind):"),  # reads an attribute
    ("def work(x, scale=2):", "def work(x: list[int], scale=2):"),  # an annotation subscripts
    ('    kind = "plain"', '    kind = "other"'),  # a class body runs
    ("LIMIT = 3", "LIMIT = 4"),  # an assignment
    ("def helper():\n    return 1\n", ""),  # a name removed
    ("def work(x, scale=2):", "\ndef work(x, scale=2):"),  # a line inserted: renumbering
], ids=["decorator", "call", "attribute", "annotation", "class", "assignment", "removal",
        "renumbering"])
def test_an_update_that_may_run_program_code_has_the_classes_watched_too(app, old, new):
    update = ModuleUpdate(app, source=new_version(old, new))
    assert update.watched() == [app, app.Item]


def test_the_classes_are_watched_for_a_function_with_attributes_or_steps(app):
    source = new_version("return x * scale", "return x * scale + 1")
    assert ModuleUpdate(app, source=source, steps=[lambda update: None]).watched() == \
        [app, app.Item]
    app.work.tag = "set at run time"  # its attributes are copied by update_function
    assert ModuleUpdate(app, source=source).watched() == [app, app.Item]


def test_a_class_changed_by_hand_by_a_decorator_is_restored_when_the_update_fails(app,
                                                                                  manager):
    source = new_version("def work(x, scale=2):\n    return x * scale\n",
                         "@mark\ndef work(x, scale=2):\n    return x * scale + 1\n\n\n"
                         "@fail_when_applied\ndef late():\n    return 0\n")
    update = ModuleUpdate(app, source=source)
    assert app.Item.kind == "marked"  # the trial ran the decorator: a known limit
    app.Item.kind = "plain"
    with pytest.raises(RuntimeError, match="applied"):
        manager.apply_update(update, timeout=WAIT)
    assert update.state is UpdateState.ROLLED_BACK
    assert app.Item.kind == "plain"
    assert app.work(1) == 2 and not hasattr(app, "late")


def test_a_def_that_runs_nothing_is_evaluated_with_the_names_it_reads(app, manager):
    # on trial, such a def is evaluated with only what it reads of the module's globals
    source = new_version("def work(x, scale=2):\n    return x * scale\n",
                         "def work(x: Item, scale=LIMIT, *, flag=None) -> Item:\n"
                         "    return x * scale\n")
    update = ModuleUpdate(app, source=source)
    assert update.watched() == [app]
    manager.apply_update(update, timeout=WAIT)
    assert app.work(2) == 6 and app.work.__defaults__ == (3,)
    assert app.work.__kwdefaults__ == {"flag": None}
    assert app.work.__annotations__ == {"x": app.Item, "return": app.Item}
    assert app.work.__module__ == app.__name__ and app.work.__globals__ is app.__dict__


def test_a_def_reading_a_name_the_module_lacks_fails_on_trial(app):
    source = new_version("def work(x, scale=2):", "def work(x, scale=MISSING_NAME):")
    with pytest.raises(ModuleUpdateError, match="MISSING_NAME"):
        ModuleUpdate(app, source=source)
    assert app.work(1) == 2
