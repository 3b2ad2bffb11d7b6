"""A program written for the original Pymoult: a plain thread shows its items one per round,
round-robin, with no update point.

    pymoult run app.py [INTERVAL]
"""

import sys
import threading
import time

from pymoult.highlevel.managers import ThreadedManager

interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05


class Item:
    def __init__(self, n):
        self.n = n

    def display(self, round):
        print(f"round {round}: item {self.n}", flush=True)


items = [Item(n) for n in range(4)]
rounds = 0


def main():
    global rounds
    while True:
        for item in items:
            rounds += 1
            item.display(rounds)
            time.sleep(interval)


thread = threading.Thread(target=main, name="worker")
manager = ThreadedManager(name="pymoult", threads=[thread])
manager.start()
thread.start()
