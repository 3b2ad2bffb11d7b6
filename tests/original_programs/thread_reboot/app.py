"""A program written for the original Pymoult: a DSU_Thread ticks, with a static update point
in its loop; the tick count lives in the module.

    pymoult run app.py [INTERVAL]
"""

import sys
import time

from pymoult.highlevel.managers import ThreadedManager
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
ticks = 0


def work():
    global ticks
    try:
        while True:
            ticks += 1
            print(f"v1 tick {ticks}", flush=True)
            staticUpdatePoint()
            time.sleep(interval)
    finally:
        print("v1 main left", flush=True)


thread = DSU_Thread(target=work, name="ticker")
manager = ThreadedManager(name="pymoult", threads=[thread])
manager.start()
thread.start()
