"""Tic/tac: two functions that must change together.

    pymoult run examples/tictac/app.py [--interval SECONDS]
    pymoult push examples/tictac/update.py --wait --to ADDRESS
    pymoult demo tictac    # all in one command: start, push, show the change, Ctrl-C

Each round the program calls ``tic()``, waits half an interval, calls ``tac()`` and prints the
pair. Version 1 says ``tic-tac``, version 2 ``TIC-TAC``. An update that changed the functions at
an arbitrary moment could land between the two calls and print a mixed pair (``tic-TAC``); this
one redefines both in one step, at the update point between rounds, so no mixed pair is ever
printed. Ctrl-C ends it.
"""

import argparse
import time

from pymoult.lowlevel.alterability import staticUpdatePoint


def tic():
    return "tic"


def tac():
    return "tac"


def main():
    parser = argparse.ArgumentParser(description="print tic-tac pairs until Ctrl-C")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds per pair")
    interval = parser.parse_args().interval
    pairs = 0
    try:
        while True:
            first = tic()
            time.sleep(interval / 2)  # the pair is not atomic: only the point below is safe
            second = tac()
            pairs += 1
            print(f"pair {pairs}: {first}-{second}", flush=True)
            staticUpdatePoint("between pairs")
            time.sleep(interval / 2)
    except KeyboardInterrupt:
        print(f"stopped after {pairs} pairs", flush=True)


if __name__ == "__main__":
    main()
