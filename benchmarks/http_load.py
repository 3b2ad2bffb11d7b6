"""A steady HTTP client load, run as a process of its own: what bench_under_load.py measures with.

    python benchmarks/http_load.py --port PORT [--clients 8] [--rate 100] [--duration 20]
                                   [--path / --path /report] [--auth USER:PASSWORD] --out FILE

``--clients`` threads each hold one keep-alive connection (``http.client``) and send GETs,
cycling over the ``--path`` values, at ``--rate`` requests per second each (0: as fast as the
server answers). Pacing is per client and closed: a client whose answer is late sends its next
request when the answer comes (missed slots are skipped, not sent in a burst), so the load stays
steady and a held request shows as one long latency. Each request is recorded: when it was sent
(``time.monotonic()``, a system-wide clock on Linux, so the benchmark can compare it with its own
timestamps), its latency and whether it succeeded.

A request fails when its status is not 200 or its answer is inconsistent with the server's
example (examples/http_auth): the session's visit count must go up by one on each request of a
connection (state kept across updates), the body's ``rev N`` and the ``X-Send-Rev`` header (set
by two different functions of the same update) must agree, ``rev`` may never go back on a
connection, and ``doomed`` (the marker of the update that is rolled back) may never be seen.
An exception (connection reset, timeout) is a connection error: the client reconnects.

Outcome of each request: 0 served, 1 failed (a wrong answer), 2 connection error.
Prints ``ready`` once every client is connected, ``start T`` when the load starts (T in
``time.monotonic()``), and writes the JSON results to ``--out`` at the end.
"""

import argparse
import base64
import http.client
import json
import re
import threading
import time

VISIT = re.compile(r"visit (\d+)")
REV = re.compile(r"rev (\d+)")


class LoadClient(threading.Thread):
    """One connection, its pacing, and the record of its requests."""

    def __init__(self, index, args, start_line, stop_at):
        super().__init__(name=f"load client {index}", daemon=True)
        self.index, self.args = index, args
        self.start_line, self.stop_at = start_line, stop_at
        self.headers = {}
        if args.auth:
            self.headers["Authorization"] = "Basic " + base64.b64encode(args.auth.encode()).decode()
        self.sent, self.latency, self.outcome = [], [], []
        self.problems = {}  # kind -> count
        self.examples = []  # the first few problems, described
        self.connections = 0
        self.connection = None
        self.cookie = None
        self.last_visit = self.last_rev = None

    def connect(self):
        self.connection = http.client.HTTPConnection(self.args.host, self.args.port,
                                                     timeout=self.args.timeout)
        self.connection.connect()
        self.connections += 1
        self.cookie = self.last_visit = self.last_rev = None

    def problem(self, kind, detail):
        self.problems[kind] = self.problems.get(kind, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"client {self.index}, {kind}: {detail}")

    def check(self, status, body, send_rev):
        """The problems of one answer (empty when it is consistent with the last ones)."""
        kinds = []
        if status != 200:
            kinds.append(("status", f"{status} {body[:80]!r}"))
        if "doomed" in body or send_rev == "doomed":
            kinds.append(("rolled-back version seen", body[:120]))
        visit = VISIT.search(body)
        if visit is None:
            if status == 200:
                kinds.append(("no visit count", body[:120]))
        else:
            visit = int(visit.group(1))
            expected = 1 if self.last_visit is None else self.last_visit + 1
            if self.cookie is not None and visit != expected:
                kinds.append(("session state lost", f"visit {visit}, expected {expected}"))
            self.last_visit = visit
        rev = REV.search(body)
        rev = None if rev is None else int(rev.group(1))
        if send_rev != (None if rev is None else str(rev)):
            kinds.append(("torn (body and header from different versions)",
                          f"body rev {rev}, header X-Send-Rev {send_rev}"))
        if rev is not None:
            if self.last_rev is not None and rev < self.last_rev:
                kinds.append(("version went back", f"rev {rev} after {self.last_rev}"))
            self.last_rev = rev
        return kinds

    def run(self):
        paths, interval = self.args.path, (1.0 / self.args.rate if self.args.rate else 0.0)
        self.start_line.wait()
        # spread the clients' slots over one interval, so that they do not all send at once
        next_at = time.monotonic() + interval * self.index / self.args.clients
        n = 0
        while True:
            now = time.monotonic()
            if now >= self.stop_at:
                break
            if next_at > now:
                time.sleep(next_at - now)
            headers = dict(self.headers)
            if self.cookie:
                headers["Cookie"] = self.cookie
            sent = time.monotonic()
            try:
                if self.connection is None:
                    self.connect()
                self.connection.request("GET", paths[n % len(paths)], headers=headers)
                response = self.connection.getresponse()
                body = response.read().decode()
                latency = time.monotonic() - sent
                kinds = self.check(response.status, body, response.getheader("X-Send-Rev"))
                self.cookie = response.getheader("Set-Cookie") or self.cookie
            except (OSError, http.client.HTTPException) as exc:
                latency = time.monotonic() - sent
                kinds = [("connection error", repr(exc))]
                if self.connection is not None:
                    self.connection.close()
                self.connection = None
            for kind, detail in kinds:
                self.problem(kind, detail)
            self.sent.append(sent)
            self.latency.append(latency)
            self.outcome.append(0 if not kinds else 2 if kinds[0][0] == "connection error" else 1)
            n += 1
            next_at = max(next_at + interval, time.monotonic()) if interval else 0.0
        if self.connection is not None:
            self.connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="requests per second per client (0: as fast as answered)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--path", action="append", help="paths to cycle over (default: /)")
    parser.add_argument("--auth", help="USER:PASSWORD sent as Basic authorization")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    args.path = args.path or ["/"]

    start_line = threading.Event()
    clients = [LoadClient(i, args, start_line, stop_at=float("inf"))
               for i in range(args.clients)]
    for client in clients:
        client.connect()  # every connection open before the clock starts
    print("ready", flush=True)
    start = time.monotonic()
    for client in clients:
        client.stop_at = start + args.duration
        client.start()
    start_line.set()
    print(f"start {start!r}", flush=True)
    for client in clients:
        client.join(args.duration + 2 * args.timeout + 10)
    end = time.monotonic()
    stuck = [client.name for client in clients if client.is_alive()]

    problems = {}
    for client in clients:
        for kind, count in client.problems.items():
            problems[kind] = problems.get(kind, 0) + count
    results = {
        "clients": args.clients, "rate_per_client": args.rate, "duration": args.duration,
        "paths": args.path, "start": start, "end": end, "stuck_clients": stuck,
        "connections_opened": sum(client.connections for client in clients),
        "problems": problems,
        "problem_examples": [e for client in clients for e in client.examples][:20],
        # one entry per request, all clients merged: sent at (monotonic s), latency (s), and
        # outcome: 0 served, 1 failed (a wrong answer), 2 connection error
        "sent": [t for client in clients for t in client.sent],
        "latency": [t for client in clients for t in client.latency],
        "outcome": [o for client in clients for o in client.outcome],
    }
    with open(args.out, "w") as out:
        json.dump(results, out)
    print(f"done: {len(results['sent'])} requests, problems {problems or 'none'}", flush=True)


if __name__ == "__main__":
    main()
