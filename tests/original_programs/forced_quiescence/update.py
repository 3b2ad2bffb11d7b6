#parsed
"""Forced quiescence, as in the original's tutorial: new calls of ``func_v1`` are held at its
entry until the running one has returned, the function is redefined, and the held call runs
the new version."""

import sys
import time

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.alterability import (cleanForceQuiescence, setupForceQuiescence,
                                           waitForceQuiescence)
from pymoult.lowlevel.relinking import redefineFunction

main = sys.modules["__main__"]
interval = main.interval


def func_v2(n):  # runs with the application's globals once it replaces func_v1
    print(f"v2 begins {n}", flush=True)
    time.sleep(interval)
    print(f"v2 ends {n}", flush=True)


class ForcedUpdate(Update):
    def preupdate_setup(self):
        self.events = setupForceQuiescence(main, main.func_v1)

    def wait_alterability(self):
        return waitForceQuiescence(self.events[0])

    def apply(self):
        redefineFunction(main, main.func_v1, func_v2)

    def preresume_setup(self):
        cleanForceQuiescence(self.events[1])


fetch_manager("pymoult").add_update(ForcedUpdate(name="forced"))
