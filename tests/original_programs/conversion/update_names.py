#parsed
"""As update_eager.py, but the new ``display`` reads the round from ``main`` (the application's
module, as the original's scripts call it), while the application has a function of that name."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import EagerConversionUpdate

main = sys.modules["__main__"]


class NewItem:
    def __init__(self, n):
        self.n = n
        self.label = "new"

    def display(self, round):  # the argument is the same as main.rounds
        print(f"round {main.rounds}: item {self.n} label {self.label}", flush=True)


def transformer(item):
    item.label = f"converted in round {main.rounds}"


fetch_manager("pymoult").add_update(
    EagerConversionUpdate(main.Item, NewItem, transformer, name="eager", threads=[main.thread]))
