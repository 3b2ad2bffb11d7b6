"""An asyncio server whose connection handler is updated live, with connections open.

    pymoult run examples/asyncio_server/app.py [--interval SECONDS]
    pymoult push examples/asyncio_server/update.py --wait --to ADDRESS
    pymoult demo asyncio_server    # all in one command: start, push, show the change, Ctrl-C

One event loop, in the Runner thread, runs a TCP server on 127.0.0.1 (a free port) and a client
of it. The server runs ``handle``, a coroutine, for each connection: it answers every line it
reads with a greeting. Each round the client sends a line on a connection it opened at the start
and keeps open, and one on a new connection, prints both replies, and passes an update point.
The update (update.py) redefines ``handle`` at that point: the handler of the kept connection,
suspended in an ``await``, goes on with the code it started with (version 1, its reply count
intact), while every new connection runs version 2. The point is in a coroutine, so the whole
loop, the server with it, is parked while the update applies. Ctrl-C ends it.
"""

import argparse
import asyncio

from pymoult.lowlevel.alterability import staticUpdatePoint

HOST = "127.0.0.1"
rounds = 0


async def handle(reader, writer):
    """Serve one connection: greet each line it sends, until it closes."""
    replies = 0
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            replies += 1
            name = line.decode().strip()
            writer.write(f"hello {name} from version 1, reply {replies}\n".encode())
            await writer.drain()
    finally:
        writer.close()


async def ask(connection, text):
    """Send one line on ``connection`` and return the reply."""
    reader, writer = connection
    writer.write(f"{text}\n".encode())
    await writer.drain()
    return (await reader.readline()).decode().strip()


def quiet_cancellation(loop, context):
    """The loop's exception handler: a handler cancelled when Ctrl-C ends the loop is no error
    (asyncio 3.11 and 3.12 report it as one); anything else is reported as asyncio does."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


async def client(interval):
    global rounds
    asyncio.get_running_loop().set_exception_handler(quiet_cancellation)
    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    print(f"serving on {HOST}:{port}", flush=True)
    kept = await asyncio.open_connection(HOST, port)
    while True:
        rounds += 1
        old = await ask(kept, "kept")
        new = await asyncio.open_connection(HOST, port)
        fresh = await ask(new, "new")
        new[1].close()
        await new[1].wait_closed()
        print(f"round {rounds}: {old} | {fresh}", flush=True)
        staticUpdatePoint("between rounds")
        await asyncio.sleep(interval)


def main():
    parser = argparse.ArgumentParser(description="serve and ask until Ctrl-C")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between rounds")
    interval = parser.parse_args().interval
    try:
        asyncio.run(client(interval))
    except KeyboardInterrupt:
        print(f"stopped after {rounds} rounds", flush=True)


if __name__ == "__main__":
    main()
