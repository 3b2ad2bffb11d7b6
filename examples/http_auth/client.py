"""A client of the HTTP example that keeps its connections through the update.

    python examples/http_auth/client.py http://127.0.0.1:PORT/ [--interval SECONDS]

``pymoult demo http_auth --port 0`` runs it next to the server. Two keep-alive connections, one
anonymous and one sending alice's credentials, each ask for ``/report`` once a round and print
the replies on one line. Before the update both get 200 (version 1 ignores credentials); after
it, the anonymous one gets 401 and alice 200, on the same two connections: the client checks
that neither was ever replaced. Ctrl-C ends it: exit code 0 if no request failed and no
connection was replaced, 1 otherwise.
"""

import argparse
import base64
import http.client
import sys
import time
import urllib.parse

ALICE = "Basic " + base64.b64encode(b"alice:wonderland").decode()


class KeepAlive:
    """GET over one connection, with the session cookie the server gives; a request on a
    connection the server closed fails (http.client would otherwise open another)."""

    def __init__(self, host, port, authorization=None):
        self.connection = http.client.HTTPConnection(host, port, timeout=10)
        self.headers = {"Authorization": authorization} if authorization else {}
        self.port = None

    def get(self, path):
        self.connection.request("GET", path, headers=self.headers)
        self.port = self.connection.sock.getsockname()[1]
        response = self.connection.getresponse()
        body = response.read().decode().strip()
        if response.getheader("Set-Cookie"):
            self.headers["Cookie"] = response.getheader("Set-Cookie")
        if self.connection.sock is None:  # the server said Connection: close
            raise ConnectionError(f"the server closed the connection from port {self.port}")
        # http.client would open a new connection for the next request, silently: forbid it
        self.connection.auto_open = 0
        return response.status, body


def main():
    parser = argparse.ArgumentParser(description="ask for /report until Ctrl-C")
    parser.add_argument("url", help="the server's address, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between rounds")
    args = parser.parse_args()
    server = urllib.parse.urlsplit(args.url)
    clients = {"anonymous": KeepAlive(server.hostname, server.port),
               "alice": KeepAlive(server.hostname, server.port, ALICE)}
    rounds = 0
    try:
        while True:
            replies = []
            for who, client in clients.items():
                status, body = client.get("/report")
                replies.append(f"{who} {status}" + (f" {body}" if status == 200 else ""))
            rounds += 1
            print(f"round {rounds}: " + "; ".join(replies), flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        ports = ", ".join(str(client.port) for client in clients.values())
        print(f"client: {rounds} rounds, no request failed, the same connections throughout "
              f"(local ports {ports})", flush=True)
        return 0
    except (OSError, http.client.HTTPException) as exc:
        print(f"client: round {rounds + 1} failed: {exc!r}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
