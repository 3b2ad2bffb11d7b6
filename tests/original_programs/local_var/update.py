#parsed
"""Write the local ``label`` of every running ``watch`` frame (both threads are asleep)."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.data_update import updateLocalVar

main = sys.modules["__main__"]


class NewLabel(Update):
    def apply(self):
        updateLocalVar(main.watch, "label", "v2")


fetch_manager("pymoult").add_update(NewLabel(name="label", threads=main.threads))
