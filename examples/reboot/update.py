#parsed
"""Reboot the ``worker`` thread into version 2 of its main, at its next update point."""

import sys
import threading

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import ThreadRebootUpdate
from pymoult.lowlevel.alterability import staticUpdatePoint

app = sys.modules["__main__"]


def work_v2():
    me = threading.current_thread()
    while not app.stop.is_set():
        app.state["ticks"] += 1
        print(f"v2 tick {app.state['ticks']} in {me.name} ({me.ident}), "
              f"reboots {me.reboots}", flush=True)
        staticUpdatePoint("worker loop, v2")
        app.stop.wait(app.interval)


fetch_manager("runtime").add_update(
    ThreadRebootUpdate(app.worker, work_v2, name="worker v2", timeout=10))
