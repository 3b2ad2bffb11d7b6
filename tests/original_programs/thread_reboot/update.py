#parsed
"""Reboot the ticker thread into a new main, at its next update point: the old loop's
``finally`` runs, the same thread runs ``work_v2``, the count goes on."""

import sys
import threading
import time

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import ThreadRebootUpdate
from pymoult.lowlevel.alterability import staticUpdatePoint

main = sys.modules["__main__"]


def work_v2(step):
    me = threading.current_thread()
    while True:
        main.ticks += step
        print(f"v2 tick {main.ticks} in {me.name}, reboots {me.reboots}", flush=True)
        staticUpdatePoint()
        time.sleep(main.interval)


fetch_manager("pymoult").add_update(ThreadRebootUpdate(main.thread, work_v2, [1], name="ticker v2"))
