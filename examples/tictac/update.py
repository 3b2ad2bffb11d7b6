#parsed
"""Redefine ``tic`` and ``tac`` together, in one update applied between two pairs."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.relinking import redefineFunction

app = sys.modules["__main__"]


def tic():
    return "TIC"


def tac():
    return "TAC"


class TicTacV2(Update):
    """Both functions at once, while the Runner is parked between pairs: never a mixed pair.
    (If the second redefinition failed, the journal would undo the first.)"""

    def apply(self):
        redefineFunction(app, "tic", tic)
        redefineFunction(app, "tac", tac)


fetch_manager("runtime").add_update(
    TicTacV2(name="tic/tac v2", threads=[get_runner()], timeout=10))
