#parsed
"""Update the running FTP server: a new SITE STATS command, a new banner, and pyftpdlib's own
NOOP redefined, in one update applied between two turns of its I/O loop."""

import sys

from pyftpdlib.handlers import FTPHandler

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.data_update import addFieldToClass, addMethodToClass
from pymoult.lowlevel.relinking import redefineMethod

app = sys.modules["__main__"]

SITE_STATS = {"perm": None, "auth": True, "arg": None,
              "help": "Syntax: SITE STATS (transfers since the server started)."}


def ftp_SITE_STATS(self, line):
    stats = app.stats
    self.respond(f"200 {stats['received']} files received, {stats['sent']} sent, "
                 f"{stats['connections']} connections since the server started.")


def ftp_NOOP(self, line):
    """Do nothing, and say that the server was updated."""
    self.respond("200 NOOP: nothing done, by a server updated live.")


class ServerV2(Update):
    """Everything at once while the I/O loop is parked: no command sees part of it. Each change
    goes to the update's journal, so a failure undoes the others."""

    def apply(self):
        handler = app.Handler
        # a new dict rather than a mutation of the shared one: the change can be undone
        addFieldToClass(handler, "proto_cmds", {**handler.proto_cmds, "SITE STATS": SITE_STATS})
        addMethodToClass(handler, "ftp_SITE_STATS", ftp_SITE_STATS)
        addFieldToClass(handler, "banner", "pymoult example FTP server, version 2")
        redefineMethod(FTPHandler, "ftp_NOOP", ftp_NOOP)  # the library's own code


fetch_manager("runtime").add_update(
    ServerV2(name="ftp server v2", threads=[get_runner()], timeout=10))
