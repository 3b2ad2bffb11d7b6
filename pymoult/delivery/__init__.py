"""Delivery: how update scripts reach a running application, above ``pymoult.highlevel``.

One job per module:

- ``socket_server``: :class:`Listener`, requests over a Unix socket (default) or TCP;
- ``pipe_server``: :class:`PipeListener`, scripts written into a named pipe (no reply);
- ``authentication``: the token and the server's side of the handshake (protocol 2);
- ``peers``: connections not yet authenticated, caps per peer, refusals delayed and logged;
- ``scripts``: running a pushed script and building the reply (:func:`run_script`);
- ``script_host``: what both listeners share (limits, applied updates, ``get_app_listener``);
- ``reverts`` and ``two_phase``: a listener's ``rollback`` request, and two-phase pushes;
- ``dask_cluster``: a module updated on every worker of a Dask cluster, through Dask's own
  mechanisms (imported on its own: it needs ``distributed``).

The wire format is ``pymoult.protocol`` and the client ``pymoult.client`` (neither needs this
package). Delivery reads the managers only through their public snapshots
(``Manager.status()``, ``Manager.history()``). The original Pymoult's import path,
``pymoult.highlevel.listener``, still gives ``Listener``, ``PipeListener``,
``get_app_listener`` and the logging functions (``pymoult.logs``).
"""

from .pipe_server import PipeListener
from .script_host import get_app_listener
from .scripts import run_script, running_scripts
from .socket_server import Listener

__all__ = ["Listener", "PipeListener", "get_app_listener", "run_script", "running_scripts"]
