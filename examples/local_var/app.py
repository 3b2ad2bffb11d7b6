"""A function's local variables updated while it sleeps.

    pymoult run examples/local_var/app.py [--interval SECONDS]
    pymoult push examples/local_var/update.py --wait --to ADDRESS
    pymoult demo local_var    # all in one command: start, push, show the change, Ctrl-C

``watch()`` prints a tick and sleeps, over and over; it has no update point, and its settings
are local variables of its running frame. The update writes two of them while the thread is
asleep in ``time.sleep``: ``label`` in every thread running ``watch`` (``updateLocalVar``) and
``interval`` in the Runner only (``updateLocalVarInThread``). When the sleep returns, the same
frame goes on with the new values, its tick count intact. Ctrl-C ends it.
"""

import argparse
import time


def watch(interval):
    label = "v1"
    ticks = 0
    try:
        while True:
            ticks += 1
            print(f"tick {ticks} ({label}), next in {interval} s", flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"stopped after {ticks} ticks", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="tick until Ctrl-C")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between ticks")
    watch(parser.parse_args().interval)
