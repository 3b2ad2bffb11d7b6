#parsed
"""Redefine ``greet`` in the running hello world, at the Runner's next update point."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import SafeRedefineUpdate

app = sys.modules["__main__"]


def greet(n):
    return f"hello #{n} from version 2 (updated live, counter kept)"


fetch_manager("runtime").add_update(
    SafeRedefineUpdate(app, "greet", greet, threads=[get_runner()], timeout=10))
