#parsed
"""An update whose requirements answer "never": it is aborted and changes nothing."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate

main = sys.modules["__main__"]


def func_never(n):
    print(f"never {n}", flush=True)


class NeverUpdate(SafeRedefineUpdate):
    def check_requirements(self):
        return "never"


fetch_manager("pymoult").add_update(
    NeverUpdate(main, main.func_v1, func_never, name="never", threads=[main.thread]))
