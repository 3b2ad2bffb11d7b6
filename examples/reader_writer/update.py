#parsed
"""Change the format of ``shared``: the writer, the reader and the value, in one step."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.journal import set_attribute
from pymoult.lowlevel.relinking import redefineFunction

app = sys.modules["__main__"]


def encode(seq):
    celsius = 20 + seq % 10 / 2
    return {"seq": seq, "celsius": celsius, "fahrenheit": celsius * 9 / 5 + 32}


def decode(value):
    return value["seq"], f"{value['celsius']:.1f} C / {value['fahrenheit']:.1f} F"


def convert(value):
    """The value the writer published last, in the new format."""
    if value is None:
        return None
    seq, celsius = value.split(":")
    celsius = float(celsius)
    return {"seq": int(seq), "celsius": celsius, "fahrenheit": celsius * 9 / 5 + 32}


class NewFormat(Update):
    """Applied while both threads are parked: no thread holds a value of either format."""

    def apply(self):
        redefineFunction(app, "encode", encode)
        redefineFunction(app, "decode", decode)
        set_attribute(app, "shared", convert(app.shared))


fetch_manager("runtime").add_update(
    NewFormat(name="readings as dicts", threads=[app.reader, app.writer], timeout=10))
