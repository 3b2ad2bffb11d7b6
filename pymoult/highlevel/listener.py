"""The original Pymoult's import path for the listeners and the logging functions.

They live in ``pymoult.delivery`` (the listeners, above this tier) and ``pymoult.logs`` (the
logging functions); this module re-exports them so that programs and update scripts written
for the original (``from pymoult.highlevel.listener import Listener, log``) run unchanged.
New code imports from ``pymoult.delivery``.
"""

from ..delivery import Listener, PipeListener, get_app_listener, run_script, running_scripts
from ..logs import LOG_FILE_FORMAT, LOG_LEVELS, log, set_loglevel, set_logpath

__all__ = ["Listener", "PipeListener", "get_app_listener", "log", "set_loglevel", "set_logpath",
           "run_script", "running_scripts", "LOG_LEVELS", "LOG_FILE_FORMAT"]
