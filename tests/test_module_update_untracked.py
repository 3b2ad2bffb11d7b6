"""ModuleUpdate when the source a module runs is unknown (imported before sources were tracked,
its file edited in place): the new version is judged against the live module, definition by
definition, and what the live objects cannot tell is kept and said (``undecided`` steps)."""

import ast
import os

import pytest

from pymoult.highlevel.updates import ModuleUpdate
from pymoult.lowlevel import live_comparison
from pymoult.lowlevel.source_diff import parse_version

import modules
from modules import WAIT, loaded, update_to

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def untracked(monkeypatch):
    monkeypatch.setattr(modules, "FLOW", "edited in place, untracked")


def verdicts(module, source):
    after = parse_version(source, module.__file__)
    tree = ast.parse(source)
    code = compile(tree, module.__file__, "exec", dont_inherit=True)
    return {", ".join(v.statement.names) or f"line {v.statement.start}": (v.status, v.reason)
            for v in live_comparison.judge(module, after.statements, tree, code)}


def lines(update):
    return [str(step) for step in update.steps]


OLD = """\
import os
from os import path as ospath

LIMIT = 3
NAMES = ("a", "b")
counter = 0
cache = {}
LOG = print
STARTED = os.getpid()

def bump():
    global counter
    counter += 1
    return counter

def greet(name, punctuation="!"):
    return "hi " + name + punctuation

@staticmethod
def helper():
    return 1

class Shape:
    sides = 0
    made = 0
    __slots__ = ("x",)

    def area(self):
        return 0

    @property
    def kind(self):
        return "shape"

    @kind.setter
    def kind(self, value):
        pass

class Square(Shape):
    __slots__ = ()
    def area(self):
        return 1

def count_made():
    Shape.made += 1

register = print
register("imported")

if __name__ == "__main__":
    bump()
"""


def test_each_kind_of_definition_is_judged(tmp_path):
    app = loaded(tmp_path, OLD)
    app.bump()
    # the file as imported: nothing in it is changed or new
    assert {status for status, _ in verdicts(app, OLD).values()} == {"same", "undecided"}
    changed = (OLD.replace("LIMIT = 3", "LIMIT = 4")
               .replace('punctuation="!"', 'punctuation="?"')
               .replace("return 0\n\n    @property", "return 0.5\n\n    @property")
               .replace('__slots__ = ("x",)', '__slots__ = ("x", "y")')
               .replace("class Square(Shape)", "class Square(object)")
               .replace("import os\n", "import os\nimport json\n"))
    judged = verdicts(app, changed)
    assert judged["LIMIT"] == ("changed", "its value differs")
    assert judged["NAMES"] == ("same", "")
    assert judged["counter"][0] == "undecided"  # 1 live, 0 in the file, but global in bump()
    assert "the program rebinds it" in judged["counter"][1]
    assert judged["cache"] == ("same", "")  # still empty
    assert judged["LOG"] == ("same", "")  # an alias, resolved
    assert judged["register"] == ("same", "")
    assert judged["greet"] == ("changed", "its default values differ")
    assert judged["bump"] == ("same", "") and judged["helper"] == ("same", "")
    assert judged["Shape"][0] == "changed"
    assert "method area differs" in judged["Shape"][1]
    assert "its __slots__ differ" in judged["Shape"][1]
    assert judged["Square"] == ("changed", "its bases differ")
    assert judged["json"] == ("new", "") and judged["os"] == ("same", "")
    assert judged["ospath"] == ("same", "")
    register_line = changed.splitlines().index('register("imported")') + 1
    assert judged[f"line {register_line}"][0] == "undecided"  # new, or run at import?
    assert judged[f"line {register_line + 2}"] == ("same", "")  # the main guard: never run


def test_state_the_program_keeps_is_not_reset(tmp_path, manager):
    app = loaded(tmp_path, OLD)
    app.bump(), app.bump()
    app.cache["k"] = 1
    app.count_made()
    update = update_to(manager, app, OLD.replace("return 1\n\nclass", "return 2\n\nclass"))
    assert lines(update)[0].startswith(f"update function {app.__name__}.helper")
    assert app.counter == 2 and app.cache == {"k": 1} and app.Shape.made == 1
    assert app.helper() == 2


def test_what_cannot_be_told_is_kept_and_said(tmp_path, manager):
    app = loaded(tmp_path, OLD)
    update = update_to(manager, app, OLD.replace("LOG = print", "LOG = repr")
                       .replace("getpid()", "getppid()")
                       .replace('register("imported")', 'register("again")'))
    listing = lines(update)
    name = app.__name__
    assert any(line.startswith(f"undecided {name}.<module>: the source it runs is not known "
                               "(imported before sources were tracked; its file is the new "
                               "version (edited in place))") for line in listing)
    assert f"undecided {name}.STARTED (line 9): its value is computed at import: the live " \
           "value is kept" in listing
    assert f"set {name}.LOG (line 8): was builtins.print, now builtins.repr" in listing
    assert f"undecided {name}.<module code> (line 48): not run: whether it is new or ran at " \
           "the import cannot be told from the live module" in listing
    assert app.STARTED == os.getpid() and app.LOG is repr


def test_removed_definitions_are_removed_and_new_ones_added(tmp_path, manager):
    app = loaded(tmp_path, OLD)
    new = OLD.replace("def count_made():\n    Shape.made += 1\n", "def made():\n    return 0\n")
    update = update_to(manager, app, new)
    listing = lines(update)
    assert any(line.startswith(f"remove {app.__name__}.count_made") for line in listing)
    assert any(line.startswith(f"add function {app.__name__}.made") for line in listing)
    assert not hasattr(app, "count_made") and app.made() == 0
    assert hasattr(app, "ospath") and hasattr(app, "register")  # not defined by the module


def test_a_new_statement_binding_new_names_runs_once(tmp_path, manager):
    app = loaded(tmp_path, "calls = []\n\ndef f():\n    return 1\n")
    update_to(manager, app, "calls = []\n\ndef f():\n    return 1\n\n"
                            "for extra in range(2):\n    calls.append(extra)\n")
    assert app.calls == [0, 1] and app.extra == 1


def test_unchanged_functions_get_the_line_numbers_of_the_new_file(tmp_path, manager):
    app = loaded(tmp_path, "def f():\n    return 1\n\ndef g():\n    return 2\n")
    g = app.g
    update_to(manager, app, "def f():\n    x = 1\n    return x\n\n\ndef g():\n    return 2\n")
    assert g.__code__.co_firstlineno == 6 and app.f() == 1


def test_a_method_added_at_run_time_is_not_taken_for_a_removed_one(tmp_path):
    app = loaded(tmp_path, "class C:\n    def f(self):\n        return 1\n")
    app.C.extra = lambda self: "patched"  # its qualified name is not C.extra
    assert verdicts(app, "class C:\n    def f(self):\n        return 1\n") == {"C": ("same", "")}


def test_nothing_edited_means_nothing_changes(tmp_path, manager):
    app = loaded(tmp_path, OLD.replace("STARTED = os.getpid()\n", "")
                 .replace('register("imported")\n', ""))
    update = ModuleUpdate(app)
    assert update.steps == [] and "nothing changes" in update.describe()
    manager.apply_update(update, timeout=WAIT)
