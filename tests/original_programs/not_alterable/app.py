"""A program written for the original Pymoult: a plain thread calls ``func_v1`` in a loop, with
no update point. Its third call does not return until ``is_released()`` says so, which only
an update can change: meanwhile ``func_v1`` runs, so it cannot be redefined safely.

    pymoult run app.py [INTERVAL]
"""

import sys
import threading
import time

from pymoult.highlevel.managers import ThreadedManager

interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05


def is_released():
    return False


def func_v1(n):
    print(f"v1 {n}", flush=True)
    if n == 3:
        print("v1 waits for its release", flush=True)
        while not is_released():
            time.sleep(interval)
        print("v1 released", flush=True)


def main():
    n = 0
    while True:
        n += 1
        func_v1(n)
        time.sleep(interval)


thread = threading.Thread(target=main, name="worker")
manager = ThreadedManager(name="pymoult", threads=[thread])
manager.start()
thread.start()
