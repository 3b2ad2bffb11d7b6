"""A program written for the original Pymoult: two plain threads run ``watch``, which prints a
tick and sleeps, over and over; its label is a local variable of the running frame.

    pymoult run app.py [INTERVAL]
"""

import sys
import threading
import time

from pymoult.highlevel.managers import ThreadedManager

interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
output = threading.Lock()  # one line at a time: print() may write a line in two parts


def watch():
    name = threading.current_thread().name
    label = "v1"
    ticks = 0
    while True:
        ticks += 1
        with output:
            print(f"{name} tick {ticks} {label}", flush=True)
        time.sleep(interval)


threads = [threading.Thread(target=watch, name=f"watcher{i}") for i in (1, 2)]
manager = ThreadedManager(name="pymoult", threads=threads)
manager.start()
for thread in threads:
    thread.start()
