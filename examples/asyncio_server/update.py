#parsed
"""Redefine the asyncio server's ``handle`` at the client's update point, between two rounds.

A handler already running (the kept connection's, suspended in an ``await``) keeps the code it
started with; every connection opened from now on runs this version."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import SafeRedefineUpdate

app = sys.modules["__main__"]


async def handle(reader, writer):
    """Serve one connection: greet each line it sends, in capitals, until it closes."""
    replies = 0
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            replies += 1
            name = line.decode().strip().upper()
            writer.write(f"HELLO {name} from version 2, reply {replies}\n".encode())
            await writer.drain()
    finally:
        writer.close()


update = SafeRedefineUpdate(app, "handle", handle, threads=[get_runner()], timeout=10)
update.suspension = "points"  # at the client's point: the whole loop is parked there
fetch_manager("runtime").add_update(update)
