"""A live update of a running program, in one file.

A worker thread greets forever, with an update point in its loop. While it runs, the main thread
parks it at that point, swaps the code of ``greet`` in place (every reference to the function
now runs the new code), and releases it: the worker keeps its state (its counter) and greets
with the new version, without ever having stopped.

    python examples/hello_live_update.py [--interval SECONDS]
"""

import argparse
import threading

from pymoult.lowlevel.alterability import staticUpdatePoint, waitStaticPoints
from pymoult.threads import DSU_Thread

greeted = threading.Condition()
count = 0
stop = threading.Event()
interval = 0.2


def greet(n):
    return f"hello #{n} from version 1"


def worker():
    global count
    while not stop.is_set():
        with greeted:
            count += 1
            print(greet(count), flush=True)
            greeted.notify_all()
        staticUpdatePoint("after greeting")
        stop.wait(interval)  # a human pace; the update point does not depend on it


def greet_v2(n):
    return f"hello #{n} from version 2 (live-updated, counter kept)"


def wait_for_count(target):
    with greeted:
        if not greeted.wait_for(lambda: count >= target, timeout=10):
            raise SystemExit("the worker stopped greeting")


def main():
    global interval
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=interval,
                        help="seconds between greetings")
    interval = parser.parse_args().interval
    thread = DSU_Thread(target=worker, name="greeter")
    thread.start()
    wait_for_count(3)
    thread.suspend()  # park at the next update point
    if not waitStaticPoints([thread], timeout=10):
        raise SystemExit("the worker never reached its update point")
    print(f"-- update: {thread!r}", flush=True)
    greet.__code__ = greet_v2.__code__  # the update itself, applied while the worker is parked
    thread.resume()
    with greeted:
        parked_at = count
    wait_for_count(parked_at + 3)
    stop.set()
    thread.join(10)
    print("-- done: the worker ran both versions without stopping", flush=True)


if __name__ == "__main__":
    main()
