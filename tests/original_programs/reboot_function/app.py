"""A program written for the original Pymoult: a DSU_Thread sums the integers, with a static
update point in its loop (reboots are served there).

    pymoult run app.py [INTERVAL]
"""

import sys
import time

from pymoult.highlevel.managers import ThreadedManager
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05


def count_v1():
    n = 0
    total = 0
    while True:
        n += 1
        total += n
        print(f"v1 n={n} total={total}", flush=True)
        staticUpdatePoint()
        time.sleep(interval)


thread = DSU_Thread(target=count_v1, name="counter")
manager = ThreadedManager(name="pymoult", threads=[thread])
manager.start()
thread.start()
