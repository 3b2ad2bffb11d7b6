#parsed
"""Write the locals ``label`` and ``interval`` of the running ``watch()`` frame."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.data_update import updateLocalVar, updateLocalVarInThread

app = sys.modules["__main__"]


class NewSettings(Update):
    """No threads to park: local writes happen inside a stop-the-world window, whatever the
    thread is doing (here, sleeping). The journal keeps the old values for a rollback."""

    def apply(self):
        updateLocalVar(app.watch, "label", "v2")
        updateLocalVarInThread(get_runner(), app.watch, "interval", 0.1)


fetch_manager("runtime").add_update(NewSettings(name="watch settings"))
