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

__version__ = "0.1.0"

logging.getLogger("pymoult").addHandler(logging.NullHandler())


def track_sources(include=None):
    """Record the source of every module imported from now on, so that a module whose file is
    edited in place (or installed over) can still be updated from its new file: call it before
    importing your modules (``pymoult run`` does it for the whole application). ``include(name,
    path)`` selects modules. See ``pymoult.source_tracking``."""
    from .source_tracking import track_sources as track
    track(include)
