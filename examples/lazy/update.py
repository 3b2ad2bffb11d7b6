#parsed
"""Give every ``Record`` a ``label``, each on its first access (lazy conversion)."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import LazyConversionUpdate

app = sys.modules["__main__"]


class Record:
    def __init__(self, key):
        self.key = key
        self.value = key * key
        self.label = f"r{key}"

    def show(self):
        return f"#{self.key}={self.value} ({self.label})"


def add_label(record):
    """Runs in the thread that first touches ``record``, once per record."""
    record.label = f"r{record.key}"
    app.converted += 1


fetch_manager("runtime").add_update(LazyConversionUpdate(
    app.Record, Record, add_label, name="records get a label, lazily",
    threads=[get_runner()], timeout=10))
