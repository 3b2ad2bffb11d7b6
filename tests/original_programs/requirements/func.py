#parsed
"""The update named "func": ``func_v1`` redefined to print v2."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate

main = sys.modules["__main__"]


def func_v2(n):
    print(f"v2 {n}", flush=True)


fetch_manager("pymoult").add_update(
    SafeRedefineUpdate(main, main.func_v1, func_v2, name="func", threads=[main.thread]))
