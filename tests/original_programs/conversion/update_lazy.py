#parsed
"""Convert each ``Item`` on its first access (lazily): the transformer gives each a ``label``
that names the round it was converted in, and ``display`` shows it."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import LazyConversionUpdate

main = sys.modules["__main__"]


class NewItem:
    def __init__(self, n):
        self.n = n
        self.label = "new"

    def display(self, round):
        print(f"round {round}: item {self.n} label {self.label}", flush=True)


def transformer(item):
    item.label = f"converted in round {main.rounds}"


fetch_manager("pymoult").add_update(
    LazyConversionUpdate(main.Item, NewItem, transformer, name="lazy", threads=[main.thread]))
