#parsed
"""Reboot the running ``count_v1`` into ``count_v2``, which goes on from the state captured
in ``count_v1``'s frame (its locals ``n`` and ``total``)."""

import sys
import time

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.stack import rebootFunction

main = sys.modules["__main__"]


def count_v2(state):
    n, total = state
    print(f"v2 starts from n={n} total={total}", flush=True)
    while True:
        n += 1
        total += n
        print(f"v2 n={n} total={total}", flush=True)
        staticUpdatePoint()
        time.sleep(main.interval)


def capture_state(frame):
    return frame.f_locals["n"], frame.f_locals["total"]


class RebootCounter(Update):
    def apply(self):
        self.rebooted = rebootFunction(main.thread, main.count_v1, count_v2, capture_state)

    def check_over(self):
        return self.rebooted.done()

    def wait_over(self):
        self.rebooted.result(10)
        return True


fetch_manager("pymoult").add_update(RebootCounter(name="reboot count", threads=[main.thread]))
