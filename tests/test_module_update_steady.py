"""A module's updates after its first one (the steady state): what makes them cheap must keep
them exact.

The record of the version a module runs is checked in O(1) while the module's dict keeps its
version tag (``_cpython.dict_version``); a ``def`` that runs nothing is applied without touching
the module's dict, so that the tag stays. Code from elsewhere (an update script's) is found
wherever it hides however cheap the rest is: a function's code replaced, a name rebound, a
class attribute rebound, a wrapper's ``__wrapped__`` changed."""

import importlib
import sys

import pytest

import pymoult
from pymoult import _cpython, source_tracking
from pymoult.highlevel.updates import ModuleUpdate
from pymoult.lowlevel import source_diff
from pymoult.lowlevel.live_comparison import foreign_definitions
from pymoult.lowlevel.source_diff import forget_version, live_files, recorded_version

pytestmark = pytest.mark.timeout(60)
WAIT = 10.0
VERSIONED = _cpython.dict_version({}) is not None
needs_versions = pytest.mark.skipif(not VERSIONED, reason="this Python keeps no dict versions")

SOURCE = "import functools\n\n\n" + "".join(
    f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(30)) + "".join(
    f"class K{i}:\n    def m(self):\n        return {i}\n\n\n" for i in range(10)) + (
    "class Cached:\n"
    "    @functools.lru_cache(maxsize=None)\n"
    "    def m(self):\n"
    "        return 'file'\n\n\n"
    "LIMIT = 1\n\n\n"
    "def target():\n"
    "    return 0\n")


def version(k):
    """The module with ``target`` returning ``k`` (a one-line change of a body)."""
    return SOURCE.replace("def target():\n    return 0\n", f"def target():\n    return {k}\n")


def scripted(text):
    """The functions an update script defines (their code comes from ``<script>``)."""
    namespace = {}
    exec(compile(text, "<script>", "exec"), namespace)
    return namespace


@pytest.fixture
def steady(tmp_path, monkeypatch, manager):
    """A module imported with sources tracked, after two updates (the second one from the
    version recorded by the first), its record checked since."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "steady_app.py").write_text(SOURCE)
    importlib.invalidate_caches()
    pymoult.track_sources()
    try:
        app = importlib.import_module("steady_app")
    finally:
        source_tracking.stop_tracking()
    for k in (1, 2):
        apply(manager, app, version(k))
    assert recorded_version(app) is not None and app.target() == 2
    yield app
    sys.modules.pop("steady_app", None)
    forget_version(app)


def apply(manager, app, source):
    update = ModuleUpdate(app, source=source)
    manager.apply_update(update, timeout=WAIT)
    return update


@needs_versions
def test_the_record_holds_while_the_dict_keeps_its_tag_and_is_compared_once_it_moves(steady):
    record = source_diff._versions["steady_app"]
    assert record.checked == _cpython.dict_version(vars(steady))
    objects = record.objects
    record.objects = tuple(object() for _ in objects)  # what a comparison would refuse
    try:
        assert recorded_version(steady) is record.version  # not compared: the dict is as it was
        steady.unrelated = 1  # any change of the dict: the names are compared again
        assert recorded_version(steady) is None
    finally:
        record.objects = objects
        del steady.unrelated


def test_a_definition_rebound_after_the_record_was_checked_makes_it_stale(steady):
    current = recorded_version(steady)
    assert recorded_version(steady) is current  # checked twice: the second time by its tag
    f3 = steady.f3
    steady.f3 = steady.f4
    assert recorded_version(steady) is None
    steady.f3 = f3  # bound again to the very object recorded: it holds again
    assert recorded_version(steady) is current
    steady.LIMIT, steady.added = 2, 3  # not definitions: it holds
    assert recorded_version(steady) is current and recorded_version(steady) is current
    k5 = steady.K5
    del steady.K5
    assert recorded_version(steady) is None
    steady.K5 = k5
    assert recorded_version(steady) is current


@needs_versions
def test_a_body_edit_leaves_the_module_dict_as_it_was(steady, manager):
    tag = _cpython.dict_version(vars(steady))
    objects = source_diff._versions["steady_app"].objects
    target = steady.target
    apply(manager, steady, version(3))
    assert steady.target is target and target() == 3  # updated in place
    assert _cpython.dict_version(vars(steady)) == tag  # not even bound for a moment
    assert source_diff._versions["steady_app"].objects is objects  # the same bindings


def test_an_update_that_adds_a_definition_records_its_object(steady, manager):
    source = version(3) + "\n\ndef added():\n    return 'added'\n"
    apply(manager, steady, source)
    assert steady.added() == "added" and recorded_version(steady) is not None
    steady.added = steady.f1  # the new definition rebound: the record must know its object
    assert recorded_version(steady) is None


def test_definitions_an_update_moves_are_recorded_in_their_new_order(steady, manager):
    # nothing is bound again (the dict keeps its tag) but the names come in another order: the
    # record pairs each name with its own object
    moved = version(3).replace("def f1(x):\n    return x + 1\n\n\n", "").replace(
        "def f3(x):", "def f1(x):\n    return x + 1\n\n\ndef f3(x):")
    assert moved != version(3)
    apply(manager, steady, moved)
    steady.LIMIT = 5  # not a definition, but the dict moves: the names are compared
    assert steady.target() == 3 and recorded_version(steady) is not None
    steady.f1 = steady.f2
    assert recorded_version(steady) is None


def test_a_module_without_builtins_is_not_given_them_by_an_update(steady, manager):
    builtins = vars(steady).pop("__builtins__")
    try:
        apply(manager, steady, version(3))
        assert "__builtins__" not in vars(steady) and steady.target() == 3
    finally:
        vars(steady)["__builtins__"] = builtins


def _code_replaced(app):
    app.f7.__code__ = scripted("def f7(x):\n    return -7\n")["f7"].__code__
    return lambda: app.f7(0) == 7


def _name_rebound(app):
    app.f9 = scripted("def f9(x):\n    return -9\n")["f9"]
    return lambda: app.f9(0) == 9


def _class_attribute_rebound(app):
    app.K3.m = scripted("def m(self):\n    return -3\n")["m"]
    return lambda: app.K3().m() == 3


def _wrapper_changed(app):
    app.Cached.m.__wrapped__ = scripted("def m(self):\n    return 'script'\n")["m"]
    return lambda: app.Cached.m.__wrapped__.__code__.co_filename == app.__file__


@pytest.mark.parametrize("change, name", [
    (_code_replaced, "f7"), (_name_rebound, "f9"), (_class_attribute_rebound, "K3"),
    (_wrapper_changed, "Cached")], ids=lambda value: getattr(value, "__name__", value))
def test_code_from_elsewhere_is_found_and_put_back_by_the_next_update(steady, manager, change,
                                                                      name):
    # the next update changes only ``target``: the definition the script changed is found as
    # it is now (not as recorded) and brought back to the file's version
    recorded_version(steady)
    back = change(steady)
    assert not back()
    files = live_files(steady, recorded_version(steady) or source_diff.version_of(steady))
    assert name in foreign_definitions(steady, files)
    update = apply(manager, steady, version(3))
    assert steady.target() == 3 and back()
    assert name in {step.name for step in update.steps}
    assert foreign_definitions(steady, files) == []
    assert recorded_version(steady) is not None
