"""Test helper: real modules imported from source files, and their new versions applied.

``loaded(source)`` writes ``source`` to a fresh file, imports it as a uniquely named module
(so that ``inspect``, ``linecache`` and Pymoult find its source as in a real program) and
returns it. ``update_to(manager, module, source, **kwargs)`` builds a ``ModuleUpdate`` and
applies it, returning the update.
"""

import importlib.util
import itertools
import sys
import textwrap

from pymoult.highlevel.updates import ModuleUpdate

WAIT = 10.0
_names = itertools.count()


def loaded(tmp_path, source, name=None):
    name = name or f"pm_mod_{next(_names)}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def update_to(manager, module, source, **kwargs):
    update = ModuleUpdate(module, source=textwrap.dedent(source), **kwargs)
    manager.apply_update(update, timeout=WAIT)
    return update
