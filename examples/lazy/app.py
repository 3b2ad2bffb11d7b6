"""Lazy conversion: a pool of 10,000 objects converted one by one, on first access.

    pymoult run examples/lazy/app.py [--interval SECONDS] [--batch N]
    pymoult push examples/lazy/update.py --wait --to ADDRESS
    pymoult demo lazy    # all in one command: start, push, show the change, Ctrl-C

The program walks a pool of 10,000 records, a batch per round, and prints the first and last
record of the batch and how many records the update has converted so far. The update gives
``Record`` a ``label`` field lazily: it pauses the program only to update the class and mark
the records pending; each record is then converted (its ``label`` set) the first time the
program touches it. The count grows one batch per round, not 10,000 at once. Ctrl-C ends it.
"""

import argparse
import time

from pymoult.lowlevel.alterability import staticUpdatePoint

POOL_SIZE = 10_000


class Record:
    def __init__(self, key):
        self.key = key
        self.value = key * key

    def show(self):
        return f"#{self.key}={self.value}"


pool = [Record(key) for key in range(POOL_SIZE)]
converted = 0  # the update's transformer counts the records it converts


def main():
    parser = argparse.ArgumentParser(description="walk the pool until Ctrl-C")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds per round")
    parser.add_argument("--batch", type=int, default=500, help="records touched per round")
    args = parser.parse_args()
    start, rounds = 0, 0
    try:
        while True:
            rounds += 1
            batch = pool[start:start + args.batch]  # slicing touches no record
            shown = [record.show() for record in batch]
            print(f"round {rounds}: {shown[0]} .. {shown[-1]}, converted {converted}",
                  flush=True)
            start = (start + args.batch) % POOL_SIZE
            staticUpdatePoint("between rounds")
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print(f"stopped after {rounds} rounds, converted {converted}", flush=True)


if __name__ == "__main__":
    main()
