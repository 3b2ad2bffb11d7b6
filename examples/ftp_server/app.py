"""A real third-party server, pyftpdlib's FTP server, updated while clients stay connected.

    pymoult run examples/ftp_server/app.py [--port PORT] [--root DIR]
    python examples/ftp_server/client.py ftp://127.0.0.1:PORT/   # or any FTP client:
                                               # user "user", password "12345"
    pymoult push examples/ftp_server/update.py --wait --to ADDRESS
    pymoult demo ftp_server --port 0  # all in one: start it and client.py, push, Ctrl-C

pyftpdlib (``pip install pyftpdlib``) runs its asynchronous I/O loop in the Runner; between two
turns of the loop the Runner passes an update point. The update (see update.py) changes the
server without a restart: a new ``SITE STATS`` command reports the transfer counters this
program has kept since it started, the banner of new connections changes, and pyftpdlib's own
``FTPHandler.ftp_NOOP`` is redefined. Connected clients keep their session and their data
connections. Ctrl-C ends it.
"""

import argparse
import logging
import tempfile

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from pymoult.lowlevel.alterability import staticUpdatePoint

stats = {"connections": 0, "received": 0, "sent": 0}


class Handler(FTPHandler):
    banner = "pymoult example FTP server, version 1"

    def on_connect(self):
        stats["connections"] += 1
        print(f"connection {stats['connections']} from port {self.remote_port}", flush=True)

    def on_file_received(self, file):
        stats["received"] += 1

    def on_file_sent(self, file):
        stats["sent"] += 1


def serve(port, root):
    authorizer = DummyAuthorizer()
    authorizer.add_user("user", "12345", root, perm="elradfmw")
    Handler.authorizer = authorizer
    server = FTPServer(("127.0.0.1", port), Handler)
    print(f"serving ftp://127.0.0.1:{server.address[1]}/ from {root}", flush=True)
    try:
        while True:
            server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
            staticUpdatePoint("between I/O loop turns")
    except KeyboardInterrupt:
        pass
    finally:
        server.close_all()
    print(f"stopped: {stats['connections']} connections, {stats['received']} files received, "
          f"{stats['sent']} sent", flush=True)


def main():
    parser = argparse.ArgumentParser(description="serve FTP until Ctrl-C")
    parser.add_argument("--port", type=int, default=2121, help="0 picks a free port")
    parser.add_argument("--root", help="the directory served (default: a new temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # pyftpdlib would log every command otherwise
    with tempfile.TemporaryDirectory(prefix="pymoult-ftp-") as scratch:
        serve(args.port, args.root or scratch)


if __name__ == "__main__":
    main()
