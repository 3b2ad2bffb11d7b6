"""A worker thread rebooted into a new main.

    pymoult run examples/reboot/app.py [--interval SECONDS]
    pymoult push examples/reboot/update.py --wait --to ADDRESS
    pymoult demo reboot    # all in one command: start, push, show the change, Ctrl-C

A ``DSU_Thread`` named ``worker`` ticks in a loop with an update point. The update reboots it at
that point into a new main function (``ThreadRebootUpdate``): the loop of version 1 is left
(its ``finally`` block runs), and the same thread, with the same identity, runs version 2. The
tick count lives in the module, so it goes on. Ctrl-C ends it.
"""

import argparse
import threading

from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

state = {"ticks": 0}
stop = threading.Event()
interval = 0.5


def work():
    me = threading.current_thread()
    try:
        while not stop.is_set():
            state["ticks"] += 1
            print(f"v1 tick {state['ticks']} in {me.name} ({me.ident}), "
                  f"reboots {me.reboots}", flush=True)
            staticUpdatePoint("worker loop")
            stop.wait(interval)
    finally:
        print("v1 main left", flush=True)


worker = DSU_Thread(target=work, name="worker")


def main():
    global interval
    parser = argparse.ArgumentParser(description="tick until Ctrl-C")
    parser.add_argument("--interval", type=float, default=interval, help="seconds per tick")
    interval = parser.parse_args().interval
    worker.start()
    try:
        while worker.is_alive():
            stop.wait(0.1)  # the Runner waits; Ctrl-C lands here
    except KeyboardInterrupt:
        stop.set()
        worker.join(5)
        print(f"stopped after {state['ticks']} ticks and {worker.reboots} reboot(s)",
              flush=True)


if __name__ == "__main__":
    main()
