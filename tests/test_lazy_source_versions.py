"""The version of a module with tracked sources is parsed lazily (only around a change, cut where
the module's own functions start): it must give exactly what a full parse gives."""

import ast
import importlib
import linecache
import sys
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pymoult
from pymoult import source_tracking
from pymoult.errors import ModuleUpdateError
from pymoult.highlevel.managers import Manager
from pymoult.highlevel.updates import ModuleUpdate
from pymoult.lowlevel import source_diff
from pymoult.lowlevel.source_diff import (compare, forget_version, parse_version,
                                          recorded_version, version_of)

pytestmark = pytest.mark.timeout(120)

BASE = '''"""doc"""
from __future__ import annotations
import os


def decorator(function):
    return function


TEXT = """
def fake():
    pass
class Fake:
    pass
"""


def second(x):
    s = \'\'\'
def not_a_def():
    pass
@decorator
\'\'\'
    return s


@decorator
def third():
    return 1


total = 1 + \\
    2
label = "café"; size = 2
pair = (1,
2); third_pair = 3


if os.sep == "/":
    def fourth():
        return 4
else:
    def fourth():
        return -4


def fifth(x):
    return (x +
1)


try:
    import json
except ImportError:
    json = None


class C:
    y = 2

    def m(self):
        return 1


def sixth():
    return 6
# a comment at column 0


@decorator
@decorator
def seventh():
    return 7
last = 1; other = 2
'''

LINES = BASE.splitlines(keepends=True)
EDITS = ["", "\n", "def h():\n    return 2\n", "    return x + 1\n", "1)\n", "Y = 1\n",
         "# a comment\n", "@decorator\n", "class D:\n    pass\n", "    z = 3\n", '"""\n',
         "else:\n", "x = 1; y = 2\n", "from __future__ import division\n", "\\\n",
         "def fake():\n"]


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    """BASE imported from a file with sources tracked."""
    directory = tmp_path_factory.mktemp("lazy")
    (directory / "lazy_base.py").write_text(BASE)
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    pymoult.track_sources()
    try:
        imported = importlib.import_module("lazy_base")
    finally:
        source_tracking.stop_tracking()
    yield imported
    sys.path.remove(str(directory))
    sys.modules.pop("lazy_base", None)


def shape(statements):
    return [(s.kind, s.names, s.start, s.end, s.text) for s in statements]


def test_the_tracked_version_is_parsed_only_at_its_start(module):
    version = version_of(module)
    full = parse_version(BASE, module.__file__)
    assert len(version._pieces) < len(full.statements)  # the rest is not parsed yet
    assert version.has_future and version.future_flags == full.future_flags
    assert shape(version.statements) == shape(full.statements)  # parsed on demand, the same


def test_the_cuts_are_where_top_level_functions_start(module):
    starts = {s.start for s in parse_version(BASE).statements}
    anchors = version_of(module)._anchors()
    assert anchors and set(anchors) <= starts
    # ``fourth`` is defined under an ``if``: not a cut; ``seventh`` starts at its decorator
    assert LINES[anchors[-1] - 1] == "@decorator\n"
    assert all(not LINES[line - 1].startswith(" ") for line in anchors)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, len(LINES)), length=st.integers(0, 3),
       insert=st.lists(st.sampled_from(EDITS), max_size=3))
def test_a_lazy_comparison_equals_a_full_one(module, start, length, insert):
    after = "".join(LINES[:start] + insert + LINES[start + length:])
    full_before = parse_version(BASE, module.__file__)
    try:
        expected = compare(full_before, after)
    except SyntaxError as exc:
        with pytest.raises(SyntaxError) as caught:
            compare(version_of(module), after)
        assert caught.value.lineno == exc.lineno
        return
    change = compare(version_of(module), after)
    assert shape(change.old) == shape(expected.old)
    assert shape(change.new) == shape(expected.new)
    assert (change.delta, change.shifted_from) == (expected.delta, expected.shifted_from)
    assert [ast.dump(s.node) for s in change.old] == [ast.dump(s.node) for s in expected.old]
    assert change.after.has_future == expected.after.has_future
    assert change.after.future_flags == expected.after.future_flags
    full_after = expected.after
    below = change.shifted_from + change.delta
    # every definition below the change, each within the lines given for it
    held = {}
    for name, first, last in change.after.definitions(below):
        held.setdefault(name, []).append((first, last))
    for name, first, last in full_after.definitions(below):
        assert any(a <= first and last <= b for a, b in held[name]), name
    for name in ("decorator", "fourth", "json", "other", "h", "Y", "y", "z", "nothing"):
        assert change.after.binds(name) == full_after.binds(name), name
    assert change.after.has_star_import == full_after.has_star_import
    assert shape(change.after.statements) == shape(parse_version(after).statements)


def test_a_star_import_and_names_in_parts_not_parsed_are_found(module):
    source = BASE.replace("import json\n", "from json import *\n")
    version = compare(version_of(module), source.replace("return 6", "return 60")).after
    assert version.has_star_import and version.binds("fourth") and not version.binds("absent")


def test_a_wrong_cut_falls_back_to_parsing_the_whole_part(module):
    # a function whose code claims a line inside a string of the version: the part cut there
    # does not parse alone, so the whole part is parsed (the same statements)
    claim = BASE.splitlines().index("def fake():") + 1
    impostor = compile("\n" * (claim - 1) + "def fake():\n    pass\n", module.__file__, "exec")
    namespace = {}
    exec(impostor, namespace)
    module.fake = namespace["fake"]
    try:
        version = version_of(module)
        assert claim in version._anchors()
        change = compare(version, BASE.replace("class Fake:", "class Faker:"))
        expected = compare(parse_version(BASE, module.__file__),
                           BASE.replace("class Fake:", "class Faker:"))
        assert shape(change.new) == shape(expected.new) and change.new[0].names == ("TEXT",)
        assert shape(change.after.statements) == shape(expected.after.statements)
    finally:
        del module.fake


# -- whole updates of a module with tracked sources --------------------------------------------

MANY = "import math\n\n\n" + "".join(
    f"def f{i}(x):\n    return x + {i}\n\n\nclass K{i}:\n    def m(self):\n        return {i}\n\n\n"
    f"LIMIT_{i} = {i}\n\n\n" for i in range(60))


@pytest.fixture
def load(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def load(name, source):
        (tmp_path / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        pymoult.track_sources()
        try:
            module = importlib.import_module(name)
        finally:
            source_tracking.stop_tracking()
        names.append(name)
        return module

    yield load
    for name in names:
        module = sys.modules.pop(name, None)
        if module is not None:
            forget_version(module)


def apply(module, source):
    manager = Manager("lazy")
    future = manager.add_update(ModuleUpdate(module, source=source))
    while not future.done():
        manager.apply_next_update()
    return future.result()


def line_of(function):
    return function.__code__.co_firstlineno


def test_updates_of_a_tracked_module_in_several_places(load):
    app = load("lazy_many", MANY)
    # first update: a line added in f10, so everything below moves down by one
    v2 = MANY.replace("    return x + 10\n", "    y = x\n    return y + 1000\n")
    apply(app, v2)
    assert app.f10(1) == 1001
    assert line_of(app.f50) == v2.splitlines().index("def f50(x):") + 1
    assert line_of(app.K50.m) == v2.splitlines().index("        return 50") + 1 - 1
    recorded = recorded_version(app)
    assert recorded is not None and len(recorded._pieces) < 60
    # a second update far from the first, in a part not parsed yet: a class and a constant
    v3 = v2.replace("        return 55\n", "        return -55\n").replace(
        "LIMIT_3 = 3\n", "LIMIT_3 = 33\n")
    apply(app, v3)
    assert app.K55().m() == -55 and app.LIMIT_3 == 33 and app.f10(1) == 1001
    # a function removed from a part not parsed yet is removed from the module
    v4 = v3.replace("def f40(x):\n    return x + 40\n", "")
    apply(app, v4)
    assert not hasattr(app, "f40") and app.f41(0) == 41
    assert [(s.kind, s.names, s.start, s.end) for s in recorded_version(app).statements] == \
        [(s.kind, s.names, s.start, s.end) for s in parse_version(v4).statements]
    # tracebacks show the lines of the running version
    v5 = v4.replace("    return x + 59\n", "    raise ValueError(x)\n")
    apply(app, v5)
    with pytest.raises(ValueError) as caught:
        app.f59(1)
    frame = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert frame.lineno == v5.splitlines().index("    raise ValueError(x)") + 1
    assert linecache.getline(app.__file__, frame.lineno).strip() == "raise ValueError(x)"


def test_a_definition_rebound_in_a_part_not_parsed_makes_the_record_stale(load):
    app = load("lazy_stale", MANY)
    apply(app, MANY.replace("    return x + 1\n", "    return x + 100\n"))
    assert recorded_version(app) is not None
    app.K30 = type("K30", (), {})  # a class far from the change, rebound by someone else
    assert recorded_version(app) is None


def test_a_new_version_that_does_not_compile_reports_its_line(load):
    app = load("lazy_broken", MANY)
    broken = MANY.replace("def f30(x):", "def f30(x:")
    with pytest.raises(ModuleUpdateError) as caught:
        ModuleUpdate(app, source=broken)
    assert caught.value.lineno == broken.splitlines().index("def f30(x:") + 1


def test_a_change_at_the_first_and_at_the_last_line(load):
    app = load("lazy_ends", MANY)
    v2 = "import math  # first\n" + MANY.split("\n", 1)[1] + "LAST = 1\n"
    apply(app, v2)
    assert app.LAST == 1
    v3 = v2.replace("LAST = 1\n", "LAST = 2\n")
    apply(app, v3)
    assert app.LAST == 2 and app.f0(1) == 1


def test_foreign_definitions_parse_only_the_parts_defining_them(load):
    """A function imported from elsewhere is not defined by the module: it costs no parsing. One
    whose code an update script changed is compared with the new version, and restored."""
    source = "from os.path import join\n" + MANY.split("\n", 1)[1]
    app = load("lazy_foreign", source)
    apply(app, source.replace("    return x + 1\n", "    return x + 100\n"))  # join: foreign
    assert app.f1(0) == 100 and len(recorded_version(app)._pieces) < 60
    scripted = {}
    exec(compile("def f40(x):\n    return -40\n", "<script>", "exec"), scripted)
    app.f40.__code__ = scripted["f40"].__code__  # a script changed f40's code in place
    v3 = source.replace("    return x + 1\n", "    return x + 100\n").replace(
        "    return x + 2\n", "    return x + 200\n")
    apply(app, v3)
    assert app.f2(0) == 200 and app.f40(0) == 40  # f40 differs from the file: back to it


def test_definition_names_are_kept_until_more_of_the_version_is_parsed(module):
    # read from the text of the parts not parsed (a def line inside a string counts), then,
    # once those parts are parsed, from the statements: never the names of another parsing
    version = version_of(module)
    lazy = version.definition_names()
    assert "fake" in lazy and version.definition_names() is lazy  # kept
    version.statements  # everything parsed
    assert version.definition_names() == parse_version(BASE).definition_names()
    assert "fake" not in version.definition_names()


def test_an_update_reads_the_definition_names_before_its_window(load, monkeypatch):
    app = load("lazy_names_early", MANY)
    update = ModuleUpdate(app, source=MANY.replace("    return x + 1\n", "    return x + 100\n"))
    read = []
    original = source_diff._Chunk.definitions
    monkeypatch.setattr(source_diff._Chunk, "definitions",
                        lambda chunk, lines: read.append(chunk) or original(chunk, lines))
    manager = Manager("lazy")
    future = manager.add_update(update)
    while not future.done():
        manager.apply_next_update()
    future.result()
    assert app.f1(0) == 100 and recorded_version(app) is update.plans[0].after
    assert read == []  # the parts not parsed were read when the update was made
