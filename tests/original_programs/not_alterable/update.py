#parsed
"""Redefine ``func_v1`` (the update "func"). While the worker is inside it, the update is not
alterable: it is postponed, and applied once the function has returned."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate

main = sys.modules["__main__"]


def func_v2(n):
    print(f"v2 {n}", flush=True)


class Redefine(SafeRedefineUpdate):
    def clean_failed_alterability(self):
        # to stderr: stdout is the application's (two threads printing could mix their lines)
        print(f"{self.name}: not alterable yet", file=sys.stderr, flush=True)
        super().clean_failed_alterability()


update = Redefine(main, main.func_v1, func_v2, name="func", threads=[main.thread])
update.set_max_tries(3)
update.set_sleep_time(0.05)
fetch_manager("pymoult").add_update(update)
