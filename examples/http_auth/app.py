"""A threaded HTTP server that gains authentication while it serves.

    pymoult run examples/http_auth/app.py [--port PORT]
    curl -i http://127.0.0.1:PORT/report                # 200 for anyone in version 1
    pymoult push examples/http_auth/update.py --wait --to ADDRESS
    curl -i http://127.0.0.1:PORT/report                # 401 now
    curl -i -u alice:wonderland http://127.0.0.1:PORT/report
    python examples/http_auth/client.py http://127.0.0.1:PORT/   # both, in a loop
    pymoult demo http_auth --port 0   # all in one: start it and client.py, push, Ctrl-C

The standard library's ``ThreadingHTTPServer`` serves each connection in a thread of its own,
with HTTP/1.1 keep-alive. Every GET goes through the module function ``respond``, which counts
the visits of the client's session (a cookie) and the views of the page. The update (see
update.py) adds authentication: the ``Session`` and ``Page`` objects are converted (a ``user``
and a ``protected`` field), and ``respond`` is redefined to ask for credentials on protected
pages. It holds new requests at ``respond``'s entry until those in progress have finished, so
no request sees half an update, and no connection is dropped: clients wait a moment at most.
Ctrl-C ends it.
"""

import argparse
import itertools
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
stats = {"requests": 0, "connections": 0}
session_ids = itertools.count(1)


class Session:
    def __init__(self, sid):
        self.sid = sid
        self.visits = 0


class Page:
    def __init__(self, path, title, text):
        self.path = path
        self.title = title
        self.text = text
        self.views = 0


pages = {page.path: page for page in [Page("/", "Home", "Welcome."),
                                      Page("/report", "Report", "Sales are up 12%.")]}
sessions = {}


def session_of(handler):
    """The session named by the request's cookie, or a new one."""
    cookie = handler.headers.get("Cookie", "")
    sid = cookie[len("session="):] if cookie.startswith("session=") else None
    with lock:
        if sid not in sessions:
            sid = f"s{next(session_ids)}"
            sessions[sid] = Session(sid)
        return sessions[sid]


def send(handler, status, text, session=None, headers=()):
    body = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    if session is not None:
        handler.send_header("Set-Cookie", f"session={session.sid}")
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def respond(handler):
    """Serve one GET (version 1: no authentication)."""
    page = pages.get(handler.path)
    if page is None:
        send(handler, 404, "no such page\n")
        return
    session = session_of(handler)
    with lock:
        session.visits += 1
        page.views += 1
        text = (f"{page.title}: {page.text} [session {session.sid}, visit {session.visits}, "
                f"page views {page.views}]\n")
    send(handler, 200, text, session)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client may send many requests per connection
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't delay the 2nd

    def setup(self):
        super().setup()
        with lock:  # print under it too: two threads printing at once can mix their lines
            stats["connections"] += 1
            print(f"connection {stats['connections']} from port {self.client_address[1]}",
                  flush=True)

    def do_GET(self):
        with lock:
            stats["requests"] += 1
        respond(self)

    def log_message(self, format, *args):
        pass  # one line per connection is enough


def main():
    parser = argparse.ArgumentParser(description="serve until Ctrl-C")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"serving on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print(f"stopped after {stats['requests']} requests on {stats['connections']} connections",
          flush=True)


if __name__ == "__main__":
    main()
