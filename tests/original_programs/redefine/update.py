#parsed
"""Redefine ``func_v1`` once it is quiescent, with the worker suspended (no update point)."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate

main = sys.modules["__main__"]


def func_v2(n):
    print(f"v2 {n}", flush=True)


manager = fetch_manager("pymoult")
update = SafeRedefineUpdate(main, main.func_v1, func_v2, name="func", threads=[main.thread])
manager.add_update(update)
