"""A program written for the original Pymoult: a plain thread calls ``func_v1`` in a loop, with
no update point; update scripts come through a named pipe, ``fifopipe`` in the current
directory.

    pymoult run app.py [INTERVAL]
"""

import sys
import threading
import time

from pymoult.highlevel.listener import PipeListener
from pymoult.highlevel.managers import ThreadedManager

interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05


def func_v1(n):
    print(f"v1 {n}", flush=True)


def main():
    n = 0
    while True:
        n += 1
        func_v1(n)
        time.sleep(interval)


thread = threading.Thread(target=main, name="worker")
manager = ThreadedManager(name="pymoult", threads=[thread])
manager.start()
listener = PipeListener("fifopipe")
listener.start()
print(f"pipe at {listener.path}", flush=True)
thread.start()
