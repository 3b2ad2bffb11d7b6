"""Pymoult: dynamic software updating for running multi-threaded CPython programs.

Tiers, imported one way only (``lowlevel`` never imports ``highlevel``, which never imports
``delivery`` but to keep the original's import path ``pymoult.highlevel.listener``):

- ``pymoult.threads``: DSU threads (reboot, suspension at update points, continuations, tracing);
- ``pymoult.lowlevel``: the mechanisms (``alterability``, ``stack``, ``world``);
- ``pymoult.highlevel``: updates and managers that drive the mechanisms;
- ``pymoult.delivery``: the listeners that bring update scripts into the running application.

Below them all, ``pymoult.protocol`` and ``pymoult.client`` (the wire format and the client,
which need no tier), ``pymoult.logs`` (the original's logging functions) and ``pymoult.errors``.

Pymoult logs through the ``pymoult`` logger and never prints.
"""

import logging
import sys
from collections.abc import Callable

__version__ = "0.1.0"

# A free-threaded CPython (3.13t and later) running without its GIL lets threads run Python code
# at the same time: the stop-the-world window, suspension and every guarantee built on them rest
# on the GIL and would silently not hold. sys._is_gil_enabled exists from 3.13 on, every build.
if not getattr(sys, "_is_gil_enabled", lambda: True)():
    raise ImportError(
        "Pymoult needs the GIL, and this free-threaded Python runs without it: its updates "
        "could not be made safely. Run with the GIL enabled (PYTHON_GIL=1, or python -X gil=1) "
        "or use a default (non free-threaded) build of Python.")

logging.getLogger("pymoult").addHandler(logging.NullHandler())


def track_sources(include: Callable[[str, str], bool] | None = None) -> None:
    """Record the source of every module imported from now on, so that a module whose file is
    edited in place (or installed over) can still be updated from its new file: call it before
    importing your modules (``pymoult run`` does it for the whole application). ``include(name,
    path)`` selects modules. See ``pymoult.source_tracking``."""
    from .source_tracking import track_sources as track
    track(include)
