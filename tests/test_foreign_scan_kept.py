"""The scan for code from elsewhere (``foreign_definitions``) is kept between updates and only
what may have changed is looked at again: what it keeps must never hide code from elsewhere,
whatever changed in between (a value rebound, a class attribute, a function's code, a class's
``__module__``)."""

import types

import pytest

from pymoult.lowlevel import live_comparison
from pymoult.lowlevel.live_comparison import foreign_definitions

pytestmark = pytest.mark.timeout(30)

OWN = "<own>"
SOURCE = ("import functools\n"
          "counter = 0\n"
          "def f(x):\n    return x\n"
          "def g(x):\n    return -x\n"
          "class K:\n    count = 0\n    def m(self):\n        return 1\n"
          "class Cached:\n"
          "    @functools.lru_cache(maxsize=None)\n"
          "    def m(self):\n        return 'file'\n")


def make():
    module = types.ModuleType("kept_mod")
    exec(compile(SOURCE, OWN, "exec"), module.__dict__)
    return module


def function(text, name, filename):
    """The function ``name`` that ``text`` defines, compiled from ``filename``."""
    namespace = {}
    exec(compile(text, filename, "exec"), namespace)
    return namespace[name]


def code(text, name, filename):
    return function(text, name, filename).__code__


@pytest.fixture(params=["reads", "referents"])
def scans(request, monkeypatch):
    """The number of full scans made (a _Scan built), with the code objects read each way (a
    ``__code__`` read each, or from the functions' referents: see ``foreign_definitions``)."""
    by_referents = request.param == "referents"
    monkeypatch.setattr(live_comparison, "_faster_by_referents", lambda *timed: by_referents)
    made = []
    original = live_comparison._Scan.__init__

    def counting(self, module, files):
        made.append(module.__name__)
        original(self, module, files)

    monkeypatch.setattr(live_comparison._Scan, "__init__", counting)
    return made


def test_the_scan_is_kept_while_only_bodies_change_from_the_file(scans):
    module = make()
    assert foreign_definitions(module, {OWN}) == []
    module.f.__code__ = code("def f(x):\n    return x + 1\n", "f", OWN)  # an update of a body
    module.K.m.__code__ = code("def m(self):\n    return 2\n", "m", OWN)
    assert foreign_definitions(module, {OWN}) == []
    assert foreign_definitions(module, {OWN}) == []
    assert scans == ["kept_mod"]  # scanned once


@pytest.mark.parametrize("where", ["function", "method"])
def test_code_from_elsewhere_is_found_after_a_body_change_was_taken(scans, where):
    module = make()
    target = module.f if where == "function" else module.K.m
    name = "f" if where == "function" else "K"
    foreign_definitions(module, {OWN})
    target.__code__ = code("def f(x):\n    return x + 1\n", "f", OWN)  # taken as it comes
    assert foreign_definitions(module, {OWN}) == []
    target.__code__ = code("def f(x):\n    return 0\n", "f", "<script>")
    assert foreign_definitions(module, {OWN}) == [name]
    target.__code__ = code("def f(x):\n    return x\n", "f", OWN)  # back to the file's
    assert foreign_definitions(module, {OWN}) == []


def test_values_that_hold_no_code_may_change_without_hiding_anything(scans):
    module = make()
    foreign_definitions(module, {OWN})
    module.counter += 1  # module state: the module's dict moves
    module.K.count += 1  # class state
    assert foreign_definitions(module, {OWN}) == []
    assert scans == ["kept_mod"]  # nothing that may hold code changed: not scanned again
    module.g.__code__ = code("def g(x):\n    return 0\n", "g", "<script>")
    module.counter += 1
    assert foreign_definitions(module, {OWN}) == ["g"]


def test_a_definition_rebound_or_a_class_attribute_changed_is_found(scans):
    module = make()
    foreign_definitions(module, {OWN})
    module.counter = function("def counter():\n    return 0\n", "counter", "<script>")
    assert foreign_definitions(module, {OWN}) == ["counter"]
    module.K.count = staticmethod(function("def c():\n    return 0\n", "c", "<script>"))
    assert foreign_definitions(module, {OWN}) == ["counter", "K"]
    del module.K.count
    module.counter = 0
    assert foreign_definitions(module, {OWN}) == []


def test_what_a_wrapper_wraps_is_looked_into_at_each_call(scans):
    module = make()
    assert foreign_definitions(module, {OWN}) == []
    module.Cached.m.__wrapped__ = function("def m(self):\n    return 's'\n", "m", "<script>")
    assert foreign_definitions(module, {OWN}) == ["Cached"]
    assert scans == ["kept_mod"]  # the wrapper itself was not rebound


def test_a_class_named_as_the_modules_later_is_scanned(scans):
    module = make()
    other = type("Other", (), {"__module__": "elsewhere",
                               "m": function("def m(self):\n    return 0\n", "m", "<script>")})
    module.Other = other
    assert foreign_definitions(module, {OWN}) == []  # not a class of the module
    other.__module__ = "kept_mod"  # the class's own dict changes, not the module's
    assert foreign_definitions(module, {OWN}) == ["Other"]


def test_other_files_make_another_scan(scans):
    module = make()
    module.g.__code__ = code("def g(x):\n    return 0\n", "g", "<script>")
    assert foreign_definitions(module, {OWN}) == ["g"]
    assert foreign_definitions(module, {OWN, "<script>"}) == []
    assert foreign_definitions(module, {OWN}) == ["g"]
    assert len(scans) == 3


def test_a_function_gaining_or_losing_a_referent_is_seen_again_whole(scans):
    module = make()
    foreign_definitions(module, {OWN})
    module.f.__defaults__ = (1,)  # one more object referred to (the referents no longer align)
    module.g.__code__ = code("def g(x):\n    return 0\n", "g", "<script>")
    assert foreign_definitions(module, {OWN}) == ["g"]
    module.f.__defaults__ = None
    module.g.__code__ = code("def g(x):\n    return -x\n", "g", OWN)
    assert foreign_definitions(module, {OWN}) == []

