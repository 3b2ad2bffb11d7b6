"""Test helper: real modules imported from source files, and their new versions applied.

``loaded(source)`` writes ``source`` to a fresh file, imports it as a uniquely named module
(so that ``inspect``, ``linecache`` and Pymoult find its source as in a real program) and
returns it. ``update_to(manager, module, source, **kwargs)`` builds a ``ModuleUpdate`` and
applies it, returning the update.

``FLOW`` says how the new version reaches Pymoult (a test module parametrizes it):
``"source given"`` passes it as ``source=``, the file left as it was; the in-place flows do
what users do, rewrite the module's file and then ask for ``ModuleUpdate(module)`` with no
source: ``"edited in place, tracked"`` with the module's source recorded at its import (as under
``pymoult run``), ``"edited in place, untracked"`` without (the live objects are all Pymoult has).
"""

import importlib.util
import itertools
import sys
import textwrap

from pymoult.highlevel.updates import ModuleUpdate
from pymoult.source_tracking import is_tracking, stop_tracking, track_sources

WAIT = 10.0
FLOWS = ("source given", "edited in place, tracked", "edited in place, untracked")
FLOW = FLOWS[0]
#: The flows in which Pymoult knows the source the module runs (untracked, it compares the live
#: module, which cannot tell state from an edited literal, nor a new call from an old one).
EXACT_FLOWS = FLOWS[:2]
_names = itertools.count()


def loaded(tmp_path, source, name=None):
    name = name or f"pm_mod_{next(_names)}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    track = FLOW == "edited in place, tracked" and not is_tracking()
    if track:
        track_sources(include=lambda module_name, _path: module_name == name)
    try:
        spec.loader.exec_module(module)
    finally:
        if track:
            stop_tracking()
    return module


def update_to(manager, module, source, **kwargs):
    source = textwrap.dedent(source)
    if FLOW == "source given":
        update = ModuleUpdate(module, source=source, **kwargs)
    else:
        with open(module.__file__, "w") as stream:
            stream.write(source)
        update = ModuleUpdate(module, **kwargs)
    manager.apply_update(update, timeout=WAIT)
    return update
