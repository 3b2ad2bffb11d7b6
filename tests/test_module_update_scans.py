"""What a ModuleUpdate leaves of the module's functions it did not change, and what it keeps
of the statements it compares: the scans of a large module's thousands of functions must not
give each of them an attribute dict, and a statement's key is its tree's, however it is kept."""

import ast
import functools
import gc
import textwrap

import pytest

from pymoult.highlevel.updates import ModuleUpdate
from pymoult.lowlevel.source_diff import compare, parse_version

from modules import WAIT, loaded

pytestmark = pytest.mark.timeout(30)

V1 = """
import functools


@functools.singledispatch
def show(value):
    return "any"


@show.register(int)
def _(value):
    return "int"


def untouched(x):
    return x


def target(x):
    return x + 1
"""


def own_dicts(function):
    """The attribute dicts a function holds (its ``__dict__``, once made), not its globals."""
    builtins = function.__globals__["__builtins__"]
    builtins = builtins if isinstance(builtins, dict) else vars(builtins)
    return [r for r in gc.get_referents(function)
            if type(r) is dict and r is not function.__globals__ and r is not builtins]


def test_an_update_gives_no_attribute_dict_to_the_functions_it_looks_through(tmp_path,
                                                                            manager):
    app = loaded(tmp_path, V1)
    assert own_dicts(app.untouched) == []
    for k in (2, 3):  # a first update, then one from the version it recorded
        source = textwrap.dedent(V1).replace("return x + 1", f"return x + {k}")
        manager.apply_update(ModuleUpdate(app, source=source), timeout=WAIT)
        assert app.target(1) == 1 + k
    assert own_dicts(app.untouched) == []
    assert app.show(1) == "int" and app.show("") == "any"  # the dispatcher is still seen


def test_a_dispatcher_is_still_found_and_updated(tmp_path, manager):
    app = loaded(tmp_path, V1)
    source = textwrap.dedent(V1).replace('return "int"', 'return "an int"')
    update = ModuleUpdate(app, source=source)
    manager.apply_update(update, timeout=WAIT)
    assert app.show(1) == "an int"
    assert isinstance(app.show, type(functools.singledispatch(len)))


def test_a_statement_key_is_its_tree_dumped_however_the_statement_is_kept():
    source = "import os\n\ndef f(x):\n    return x  # comment\n\nY = f(1)\n"
    version = parse_version(source, "m.py")
    keys = [s.key for s in version.statements]
    assert keys == [ast.dump(s.node) for s in version.statements]
    version.release_trees()  # parsed again from the text when asked
    assert [s.key for s in version.statements] == keys
    change = compare(version, "# a new first line\n" + source)
    assert [s.key for s in change.after.statements] == keys  # shifted down, same keys


V2 = """
import functools


def show(value):
    return "any"


def target(x):
    return x + 1
"""
MAKE_DISPATCHER = "\n\nshow = functools.singledispatch(show)\n"
REGISTER = '\n\n@show.register(str)\ndef _(value):\n    return "str"\n'


def dispatcher_made_by_an_update(tmp_path, manager):
    """A module whose ``show`` became a singledispatch function by its second update, after a
    first that scanned the module and found none: its new version's source."""
    app = loaded(tmp_path, V2)
    source = textwrap.dedent(V2).replace("return x + 1", "return x + 2")
    manager.apply_update(ModuleUpdate(app, source=source), timeout=WAIT)  # scanned: none
    source += MAKE_DISPATCHER
    manager.apply_update(ModuleUpdate(app, source=source), timeout=WAIT)
    assert app.show("") == "any" and str not in app.show.registry
    return app, source


def test_a_dispatcher_bound_since_the_last_scan_is_copied_on_trial(tmp_path, manager):
    """The trial of an update registers in a copy of a dispatcher bound since the module was
    last scanned, never in the live one (a name rebound: the module is scanned again). The
    registration by annotation calls nothing when the decorator is read, so the trial copies
    only the dispatchers found by that scan, not every function."""
    app, source = dispatcher_made_by_an_update(tmp_path, manager)
    by_annotation = '\n\n@show.register\ndef _(value: str):\n    return "str"\n'
    update = ModuleUpdate(app, source=source + by_annotation)  # evaluated on trial
    assert str not in app.show.registry and app.show("") == "any"
    manager.apply_update(update, timeout=WAIT)
    assert app.show("") == "str"


def test_a_registration_in_a_dispatcher_bound_since_the_last_scan_is_undone(tmp_path,
                                                                            manager):
    """A registration an applied statement adds to a dispatcher bound since the module was
    last scanned is undone with the rest when the update fails after it."""
    app, source = dispatcher_made_by_an_update(tmp_path, manager)

    def fail(update):
        assert app.show("") == "str"  # applied, then undone
        raise RuntimeError("a later step failed")

    update = ModuleUpdate(app, source=source + REGISTER, steps=[fail])
    with pytest.raises(Exception, match="a later step failed"):
        manager.apply_update(update, timeout=WAIT)
    assert app.show("") == "any" and str not in app.show.registry
