"""Type hints on the public API: every public function, class and method of a public module has
annotated parameters and a return annotation, so that ``py.typed`` tells editors and type
checkers the truth. ``mypy`` (run by ``.ci/run``, with ``disallow_untyped_defs``) checks that
every function is annotated and that the hints agree with the code; this test checks what
callers see at run time (decorated functions included)."""

import enum
import importlib
import inspect
import pathlib

import pytest

from test_layout import PUBLIC_MODULES

ROOT = pathlib.Path(__file__).resolve().parent.parent


def missing_hints(function, qualname, method=False):
    """The parts of ``function``'s signature without a hint, as ``qualname(param)`` strings."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin, or a C slot: nothing to annotate
        return []
    parameters = list(signature.parameters.values())
    if method and parameters and parameters[0].name in ("self", "cls", "mcs"):
        parameters = parameters[1:]
    missing = [f"{qualname}({p.name})" for p in parameters if p.annotation is p.empty]
    if signature.return_annotation is signature.empty and function.__name__ != "__init__":
        missing.append(f"{qualname} -> ?")
    return missing


def own_functions(cls):
    """The public methods ``cls`` defines itself (``__init__`` and ``__call__`` included), as
    (name, function) pairs; properties give their getter and setter."""
    for name, value in vars(cls).items():
        if name.startswith("_") and name not in ("__init__", "__call__"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            yield name, value.__func__, isinstance(value, classmethod)
        elif isinstance(value, property):
            for part in (value.fget, value.fset):
                if part is not None:
                    yield name, part, True
        elif inspect.isfunction(value):
            yield name, value, True


def public_definitions(module):
    """The functions and classes ``module`` defines (not re-exports), by public name."""
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(value) or inspect.isclass(value):
            yield name, value


def missing_in_module(name):
    module = importlib.import_module(name)
    missing = []
    for public, value in public_definitions(module):
        if inspect.isfunction(value):
            missing += missing_hints(value, f"{name}.{public}")
        elif not issubclass(value, enum.Enum) or vars(value).get("__init__"):
            for method, function, bound in own_functions(value):
                missing += missing_hints(function, f"{name}.{public}.{method}", method=bound)
    return missing


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_function_of_the_module_has_type_hints(name):
    assert missing_in_module(name) == []


def test_the_check_finds_a_missing_hint():
    def f(a, b: int) -> int:
        return b

    class C:
        def m(self, x: int):
            return x

        @property
        def p(self):
            return 1

    assert missing_hints(f, "f") == ["f(a)"]
    found = [missing for name, function, bound in own_functions(C)
             for missing in missing_hints(function, name, bound)]
    assert found == ["m -> ?", "p -> ?"]


def test_the_package_ships_its_hints():
    assert (ROOT / "pymoult" / "py.typed").is_file()
    assert "py.typed" in (ROOT / "setup.cfg").read_text()
