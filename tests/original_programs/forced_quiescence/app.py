"""A program written for the original Pymoult: a plain thread calls ``func_v1`` over and over,
and each call lasts a while (it sleeps between its two lines), so the function is hardly ever
quiescent by itself.

    pymoult run app.py [INTERVAL]
"""

import sys
import threading
import time

from pymoult.highlevel.managers import ThreadedManager

interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05


def func_v1(n):
    print(f"v1 begins {n}", flush=True)
    time.sleep(interval)
    print(f"v1 ends {n}", flush=True)


def main():
    n = 0
    while True:
        n += 1
        func_v1(n)


thread = threading.Thread(target=main, name="worker")
manager = ThreadedManager(name="pymoult", threads=[thread])
manager.start()
thread.start()
