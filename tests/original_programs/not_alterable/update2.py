#parsed
"""Redefine ``is_released`` (the update "release"): the worker leaves ``func_v1``."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate

main = sys.modules["__main__"]


def is_released():
    return True


fetch_manager("pymoult").add_update(
    SafeRedefineUpdate(main, main.is_released, is_released, name="release",
                       threads=[main.thread]))
