#parsed
"""The new version uses a name of the update script, ``main`` (the application's module, as
the original's scripts call it), while the application has a function of that name."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate

main = sys.modules["__main__"]


def func_v2(n):
    print(f"v2 {n} every {main.interval} s", flush=True)


manager = fetch_manager("pymoult")
update = SafeRedefineUpdate(main, main.func_v1, func_v2, name="func", threads=[main.thread])
manager.add_update(update)
