#parsed
"""An update that may apply only once the update named "func" has: until then its
requirements answer "no" and it is postponed. It redefines the function again, to v3."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate, isApplied

main = sys.modules["__main__"]


def func_v3(n):
    print(f"v3 {n}", flush=True)


class AfterFunc(SafeRedefineUpdate):
    def check_requirements(self):
        answer = "yes" if isApplied("func") else "no"
        # to stderr: stdout is the application's (two threads printing could mix their lines)
        print(f"requirements of needs-func: {answer}", file=sys.stderr, flush=True)
        return answer


update = AfterFunc(main, main.func_v1, func_v3, name="needs-func", threads=[main.thread])
update.set_sleep_time(0.05)
fetch_manager("pymoult").add_update(update)
