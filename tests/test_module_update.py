"""ModuleUpdate: the basics (functions, constants, state kept, added and removed names, the
plan) and the failure paths (syntax error, raising at evaluation, failing transformer)."""

import pytest

from pymoult.errors import ModuleUpdateError, PymoultTypeError, PymoultValueError
from pymoult.highlevel.updates import ModuleUpdate, UpdateState

from modules import EXACT_FLOWS, WAIT, loaded, update_to

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("flow")]

V1 = """
import os

TIMEOUT = 5
counter = 0
cache = {}

def bump():
    global counter
    counter += 1
    return counter

def greet(name):
    return f"hello {name}"

def old_helper():
    return "old"
"""

V2 = """
import os
import json

TIMEOUT = 10
counter = 0
cache = {}

def bump():
    global counter
    counter += 2
    return counter

def greet(name):
    return shout(f"hello {name}")

def shout(text):
    return json.dumps(text.upper())
"""


def test_functions_updated_in_place_state_kept_constants_changed(tmp_path, manager):
    app = loaded(tmp_path, V1)
    greet, bump = app.greet, app.bump
    bump(), bump()
    app.cache["k"] = "v"
    update = update_to(manager, app, V2)
    assert update.state is UpdateState.APPLIED
    assert greet("ann") == '"HELLO ANN"'  # a reference taken before runs the new code
    assert app.greet is greet
    assert bump() == 4  # the counter was kept (2), then the new code adds 2
    assert app.cache == {"k": "v"}  # state kept, not re-initialised
    assert app.TIMEOUT == 10  # a changed constant follows
    assert not hasattr(app, "old_helper")  # removed
    assert app.shout("x") == '"X"'  # added, runs against the module's globals
    assert app.shout.__globals__ is app.__dict__


def test_plan_is_readable_before_apply_and_nothing_changes_until_applied(tmp_path):
    app = loaded(tmp_path, V1)
    update = ModuleUpdate(app, source=V2)
    listing = [str(step) for step in update.steps]
    name = app.__name__
    assert f"update function {name}.bump (line 9): in place" in listing
    assert any(s.startswith(f"add function {name}.shout") for s in listing)
    assert any(s.startswith(f"set {name}.TIMEOUT") and "was 5, now 10" in s for s in listing)
    assert any(s.startswith(f"add name {name}.json") for s in listing)
    assert any(s.startswith(f"remove {name}.old_helper") for s in listing)
    assert not any(".counter" in s or ".cache" in s for s in listing)  # unchanged: kept
    assert "steps" in update.describe()
    assert app.greet("a") == "hello a" and app.TIMEOUT == 5 and hasattr(app, "old_helper")


def test_unchanged_source_has_no_steps(tmp_path, manager):
    app = loaded(tmp_path, V1)
    update = ModuleUpdate(app, source=open(app.__file__).read())
    assert update.steps == []
    assert "nothing changes" in update.describe()
    manager.apply_update(update, timeout=WAIT)
    assert app.greet("a") == "hello a"


def test_successive_updates_compare_with_the_last_applied_version(tmp_path, manager):
    app = loaded(tmp_path, V1)
    update_to(manager, app, V2)
    v3 = V2.replace("counter += 2", "counter += 3")
    update = update_to(manager, app, v3)
    assert [s.name for s in update.steps] == ["bump"]
    app.counter = 0
    assert app.bump() == 3


def test_module_code_that_is_not_a_definition_is_not_rerun(tmp_path, manager):
    app = loaded(tmp_path, "calls = []\ncalls.append('init')\ndef f():\n    return 1\n")
    update = update_to(manager, app,
                       "calls = []\ncalls.append('init again')\ndef f():\n    return 2\n")
    assert app.calls == ["init"]
    assert app.f() == 2
    assert any(s.action in ("note", "undecided") and s.line == 2 for s in update.steps)


def test_a_syntax_error_changes_nothing_and_says_where(tmp_path):
    app = loaded(tmp_path, V1)
    before = snapshot(app)
    broken = V2.replace("def shout(text):", "def shout(text)")
    with pytest.raises(ModuleUpdateError, match=r"does not compile") as caught:
        ModuleUpdate(app, source=broken)
    assert caught.value.lineno == broken.splitlines().index("def shout(text)") + 1
    same(before, snapshot(app))


def test_a_new_version_raising_at_evaluation_changes_nothing(tmp_path):
    app = loaded(tmp_path, V1)
    before = snapshot(app)
    raising = V2.replace("TIMEOUT = 10", "TIMEOUT = 1 / 0")
    with pytest.raises(ModuleUpdateError,
                       match=r"raised ZeroDivisionError.*nothing was changed") as caught:
        ModuleUpdate(app, source=raising)
    assert "ZeroDivisionError" in caught.value.traceback
    same(before, snapshot(app))
    assert app.TIMEOUT == 5 and app.greet("a") == "hello a" and hasattr(app, "old_helper")
    assert not hasattr(app, "shout") and not hasattr(app, "json")
    with pytest.raises(ModuleUpdateError, match=r"does not compile: .* \(/elsewhere/new.py, "
                                                r"line 5\)"):
        ModuleUpdate(app, source=raising.replace("1 / 0", "1 / "), filename="/elsewhere/new.py")


def snapshot(module):
    """Every binding of the module, every class attribute and every function's state."""
    state = {}
    for name, value in vars(module).items():
        state[name] = value
        if isinstance(value, type):
            state[name, "class"] = dict(vars(value))
        if hasattr(value, "__code__"):
            state[name, "code"] = (value.__code__, value.__defaults__, dict(value.__dict__))
    return state


def same(before, after):
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, dict):
            assert value.keys() == after[key].keys(), key
            assert all(value[k] is after[key][k] for k in value), key
        elif isinstance(value, tuple):
            assert all(a is b or a == b for a, b in zip(value, after[key])), key
        else:
            assert value is after[key], key


def test_a_failing_transformer_rolls_everything_back(tmp_path, manager):
    app = loaded(tmp_path, V1 + "\nclass Point:\n    def __init__(self, x):\n        self.x = x\n")
    p = app.Point(1)
    greet = app.greet
    before = snapshot(app)

    def failing(obj):
        raise RuntimeError("no")

    new = V2 + ("\nclass Point:\n    def __init__(self, x):\n"
                "        self.x = x\n        self.y = 0\n")
    update = ModuleUpdate(app, source=new, transformers={"Point": failing})
    future = manager.add_update(update)
    with pytest.raises(Exception, match="no"):
        future.result(WAIT)
    assert update.state is UpdateState.ROLLED_BACK
    assert greet("a") == "hello a" and app.TIMEOUT == 5 and hasattr(app, "old_helper")
    assert not hasattr(app, "shout") and not hasattr(app, "json")
    assert vars(p) == {"x": 1}
    same(before, snapshot(app))
    # and the module's version is still the old one: the same update can be made again
    assert [s.name for s in ModuleUpdate(app, source=V2).steps if s.action != "note"]


def test_bad_arguments(tmp_path):
    app = loaded(tmp_path, V1)
    assert ModuleUpdate(app).steps == []  # no new version given: its own file, unchanged
    with pytest.raises(PymoultTypeError, match="source= or path=, not both"):
        ModuleUpdate(app, source=V2, path="x.py")
    with pytest.raises(PymoultTypeError, match="filename must be a str, got 3"):
        ModuleUpdate(app, source=V2, filename=3)
    with pytest.raises(PymoultValueError, match="no module 'not_loaded_anywhere'"):
        ModuleUpdate("not_loaded_anywhere", source=V2)
    with pytest.raises(PymoultTypeError, match="transformers must map class names"):
        ModuleUpdate(app, source=V2, transformers={"Point": 3})
    with pytest.raises(ModuleUpdateError, match="cannot read the new version"):
        ModuleUpdate(app, path=str(tmp_path / "missing.py"))
    with pytest.raises(PymoultTypeError, match="source must be a str"):
        ModuleUpdate(app, source=b"def f(): pass")


@pytest.mark.parametrize("flow", ["source given"], indirect=True)
def test_a_source_file_edited_after_import_is_compared_with_the_live_module(tmp_path, manager):
    from pymoult.lowlevel.source_diff import version_of

    app = loaded(tmp_path, V1)
    app.bump(), app.bump()
    with open(app.__file__, "w") as stream:
        stream.write(V2)  # edited in place: the file no longer tells what the module runs
    with pytest.raises(PymoultValueError, match="is not the version the module runs: "
                                                "function 'bump' differs"):
        version_of(app)
    update = ModuleUpdate(app, source=V2)
    listing = [str(step) for step in update.steps]
    assert any(line.startswith(f"update function {app.__name__}.bump") for line in listing)
    assert any(line.startswith(f"set {app.__name__}.TIMEOUT") for line in listing)
    assert any(line.startswith(f"remove {app.__name__}.old_helper") for line in listing)
    manager.apply_update(update, timeout=WAIT)
    assert app.TIMEOUT == 10 and app.bump() == 4 and app.counter == 4  # state kept
    assert not hasattr(app, "old_helper") and app.greet("a") == '"HELLO A"'
    # old_source= still says exactly what runs, when the caller knows it
    again = loaded(tmp_path, V1)
    with open(again.__file__, "w") as stream:
        stream.write(V2)
    manager.apply_update(ModuleUpdate(again, source=V2, old_source=__import__("textwrap")
                                      .dedent(V1)), timeout=WAIT)
    assert again.TIMEOUT == 10


def test_an_update_made_before_another_was_applied_is_refused(tmp_path, manager):
    app = loaded(tmp_path, V1)
    first = ModuleUpdate(app, source=V2)
    second = ModuleUpdate(app, source=V2.replace("TIMEOUT = 10", "TIMEOUT = 11"))
    manager.apply_update(first, timeout=WAIT)
    future = manager.add_update(second)
    with pytest.raises(ModuleUpdateError, match="changed since this update was made"):
        future.result(WAIT)
    assert app.TIMEOUT == 10


def test_the_recorded_version_lets_its_syntax_trees_go_and_updates_go_on(tmp_path, manager):
    from pymoult.lowlevel.source_diff import recorded_version

    app = loaded(tmp_path, V1)
    update_to(manager, app, V2)
    recorded = recorded_version(app)
    definitions = [s for s in recorded.statements if s.kind in ("def", "assign", "import")]
    assert definitions and all(s._node is None for s in definitions)  # parsed again on demand
    # a second and a third update compare against it: the trees come back from the text
    v3 = V2.replace("counter += 2", "counter += 3")
    assert update_to(manager, app, v3).state is UpdateState.APPLIED
    assert app.bump() == 3
    assert update_to(manager, app, v3.replace("import json\n", "import json\nLEVEL = 1\n")) \
        .state is UpdateState.APPLIED
    assert app.LEVEL == 1 and app.bump() == 6


# state set from outside: only the source it runs tells it from an edit
@pytest.mark.parametrize("flow", EXACT_FLOWS, indirect=True)
def test_class_level_state_is_kept_when_a_method_changes(tmp_path, manager):
    app = loaded(tmp_path, """
class Plugin:
    registry = []
    created = 0

    def run(self):
        return "v1"
""")
    app.Plugin.registry.append("runtime")
    app.Plugin.created = 2
    app.Plugin.cache = {"k": 1}  # set at run time, not in the class body
    update_to(manager, app, """
class Plugin:
    registry = []
    created = 0
    LIMIT = 5

    def run(self):
        return "v2"
""")
    assert app.Plugin.registry == ["runtime"] and app.Plugin.created == 2
    assert app.Plugin.cache == {"k": 1} and app.Plugin.LIMIT == 5
    assert app.Plugin().run() == "v2"


# state set from outside: only the source it runs tells it from an edit
@pytest.mark.parametrize("flow", EXACT_FLOWS, indirect=True)
def test_formatting_only_differences_do_not_reset_state(tmp_path, manager):
    app = loaded(tmp_path, "VERSION = 1; hits = 0\ncache = {}\n\ndef f():\n    return 1\n")
    app.hits, app.cache["k"] = 5, 1
    # CRLF, no final newline
    source = "VERSION = 2; hits = 0\r\ncache = {}\r\n\r\ndef f():\r\n    return 2"
    update = update_to(manager, app, source)
    assert app.VERSION == 2 and app.f() == 2
    assert app.hits == 5 and app.cache == {"k": 1}
    assert {s.name for s in update.steps} == {"VERSION", "f"}


def test_a_form_feed_line_does_not_hide_a_change(tmp_path, manager):
    app = loaded(tmp_path, "X = 1\n\x0c\ndef f():\n    a = 1\n    return a\n")
    update_to(manager, app, "X = 1\n\x0c\ndef f():\n    a = 1\n    return a + 100\n")
    assert app.f() == 101


def test_system_exit_in_the_new_version_is_reported(tmp_path):
    app = loaded(tmp_path, "import sys\n\nCODE = 0\n")
    with pytest.raises(ModuleUpdateError, match=r"raised SystemExit\(3\).*line 3"):
        ModuleUpdate(app, source="import sys\n\nCODE = sys.exit(3)\n")
