"""Hello world, updated live: ``greet`` is redefined while the program greets.

    pymoult run examples/hello/app.py [--interval SECONDS]
    pymoult push examples/hello/update.py --wait --to ADDRESS   # the address it printed
    pymoult demo hello    # all in one command: start, push, show the change, Ctrl-C

The program greets from its Runner thread and passes an update point after each greeting; the
update redefines ``greet`` there. The counter lives on: the same process, the new code.
Ctrl-C ends it.
"""

import argparse
import time

from pymoult.lowlevel.alterability import staticUpdatePoint


def greet(n):
    return f"hello #{n} from version 1"


def main():
    parser = argparse.ArgumentParser(description="greet until Ctrl-C")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between greetings")
    interval = parser.parse_args().interval
    count = 0
    try:
        while True:
            count += 1
            print(greet(count), flush=True)
            staticUpdatePoint("after greeting")
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"stopped after {count} greetings", flush=True)


if __name__ == "__main__":
    main()
