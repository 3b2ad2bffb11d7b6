"""Pymoult: dynamic software updating for running multi-threaded CPython programs.

Tiers, imported one way only (``lowlevel`` never imports ``highlevel``):

- ``pymoult.threads``: DSU threads (reboot, suspension at update points, continuations, tracing);
- ``pymoult.lowlevel``: the mechanisms (``alterability``, ``stack``, ``world``);
- ``pymoult.highlevel``: updates and managers that drive the mechanisms.

Pymoult logs through the ``pymoult`` logger and never prints.
"""

import logging

__version__ = "0.1.0"

logging.getLogger("pymoult").addHandler(logging.NullHandler())
