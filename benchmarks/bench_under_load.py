"""Under-load benchmark: the HTTP server example keeps serving while 100 updates are applied.

    python benchmarks/bench_under_load.py [--quick] [--json PATH]
        [--clients 8] [--rate 50] [--duration 20] [--updates 100]

The server of examples/http_auth runs under ``pymoult run`` (loopback, a free port). A separate
process (benchmarks/http_load.py) holds ``--clients`` keep-alive connections and sends GETs of
``/`` and ``/report`` with a user's credentials, ``--rate`` per second each, for ``--duration``
seconds, recording every request: when it was sent, its latency, and whether the answer was
right (status 200, the session's visit count going up by one, the body and a header written by
two functions of the same update agreeing, never a version going back, never the rolled-back
version). Meanwhile this process applies ``--updates`` updates, evenly spread, one at a time:

1. the example's own update.py, pushed with ``pymoult push --wait`` (adds authentication:
   sessions and pages converted, ``respond`` redefined);
2. then, pushed with ``pymoult.client.push`` (what ``pymoult push`` sends): every tenth update a
   class conversion (``Session`` and ``Page`` updated, every object given a ``generation``
   field, eagerly, and ``respond`` and ``send`` redefined to show it), the others code updates
   (``respond`` and ``send`` redefined together, alternating two shapes of ``respond``, each
   update with its own revision number in the answer and in the ``X-Send-Rev`` header);
3. in the middle, one update that converts the classes, redefines both functions, then raises:
   pushed with ``pymoult push --wait``, it must end rolled back (exit code 1), and the app must
   be unchanged (a probe script checks the objects and code; a GET checks the answer) and still
   serving.

Every update holds new requests at ``respond``'s entry until those in progress have left, as the
example's own update does (forced quiescence, stacks re-read every 5 ms), then applies in a
stop-the-world window.

Figures: requests served and failed (target 0), connection errors, connections the server saw
(one per client: none dropped), updates applied / rolled back; latency median, p99 and max of
the requests in flight at no moment of an update window, of those sent while one was open, and
of those in flight at any moment of one (the window of an update runs from this process sending
it to the reply; ``pymoult push`` windows include starting the command); the update apply
latency (median, p90, max): the push round trip, and from the manager's history queued ->
applied, how long new requests were held, and the pause (alterable -> released).
Timestamps of both processes are ``time.monotonic()``, one system-wide clock on Linux.
"""

import argparse
import base64
import bisect
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import RESULTS, percentile, write_json  # noqa: E402

from pymoult import client  # noqa: E402
from pymoult.cli import LISTENING  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
PROJECT = HERE.parent
EXAMPLE = PROJECT / "examples" / "http_auth"
LOAD = HERE / "http_load.py"
USER = "alice:wonderland"
AUTHORIZATION = "Basic " + base64.b64encode(USER.encode()).decode()
WAIT = 30.0  # the longest any single step may take before the benchmark gives up

# -- the updates --------------------------------------------------------------------------------
# Scripts run in the application (see docs/delivery.md). Functions are redefined in
# place and run with the application's globals, so each revision's number is written into its
# code as a literal (@REV@), not a global of the script.

HEADER = '''#parsed
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import QuiescentRedefineUpdate
from pymoult.lowlevel.data_update import redefineClass
from pymoult.lowlevel.relinking import redefineFunction

app = sys.modules["__main__"]
'''

SEND = '''
def send(handler, status, text, session=None, headers=()):
    body = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("X-Send-Rev", "@REV@")
    if session is not None:
        handler.send_header("Set-Cookie", f"session={session.sid}")
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
'''

RESPOND_PROLOGUE = '''
def respond(handler):
    """Serve one GET (benchmark revision @REV@, shape @SHAPE@)."""
    page = pages.get(handler.path)
    if page is None:
        send(handler, 404, "no such page\\n")
        return
    session = session_of(handler)
    user = credentials(handler)
    if page.protected and user is None:
        send(handler, 401, "sign in to see this page\\n", session,
             [("WWW-Authenticate", 'Basic realm="example"')])
        return
    with lock:
        if user is not None:
            session.user = user
        session.visits += 1
        page.views += 1
'''

RESPOND_BODY = {
    "A": '''        text = (f"{page.title}: {page.text} [session {session.sid}, "
                f"visit {session.visits}, "
                f"page views {page.views}, user {session.user or 'anonymous'}, "
                f"generation {session.generation}/{page.generation}, rev @REV@]\\n")
    send(handler, 200, text, session)
''',
    "B": '''        parts = ["session " + session.sid, "visit %d" % session.visits,
                 "page views %d" % page.views, "user " + (session.user or "anonymous"),
                 "generation %d/%d" % (session.generation, page.generation), "rev @REV@"]
    send(handler, 200, "%s: %s [%s]\\n" % (page.title, page.text, ", ".join(parts)), session)
''',
}

CLASSES = '''
class Session:
    def __init__(self, sid):
        self.sid = sid
        self.visits = 0
        self.user = None
        self.@FIELD@ = @VALUE@


class Page:
    def __init__(self, path, title, text, protected=False):
        self.path = path
        self.title = title
        self.text = text
        self.views = 0
        self.protected = protected
        self.@FIELD@ = @VALUE@


def transform(obj):
    obj.@FIELD@ = @VALUE@
'''

UPDATE = '''

class BenchUpdate(QuiescentRedefineUpdate):
    def apply(self):
@CONVERT@        redefineFunction(app, "send", send)
        super().apply()  # respond, redefined in place
@FAIL@

fetch_manager("runtime").add_update(BenchUpdate(
    app, "respond", respond, name="@NAME@", timeout=10, sleep_time=0.005))
'''

CONVERT = ('        redefineClass(app, app.Session, Session, transform)\n'
           '        redefineClass(app, app.Page, Page, transform)\n')
FAIL = '        raise RuntimeError("this update fails on purpose, after changing things")\n'

# Checks, inside the application, that the rolled-back update left nothing behind. Queues no
# update; an AssertionError comes back as the push's script error.
PROBE = '''#parsed
import sys
app = sys.modules["__main__"]
with app.lock:
    objects = list(app.sessions.values()) + list(app.pages.values())
kept = [o for o in objects if hasattr(o, "doomed")]
assert not kept, f"{len(kept)} of {len(objects)} objects kept the rolled-back field"
for cls in (app.Session, app.Page):
    assert "doomed" not in cls.__init__.__code__.co_names, f"{cls.__name__}.__init__ sets doomed"
for function in (app.respond, app.send):
    assert not any("doomed" in str(c) for c in function.__code__.co_consts), \\
        f"{function.__name__} still runs the rolled-back code"
'''


def update_plan(count):
    """[(kind, revision)]: the example's update first, a conversion every tenth from the
    second, the failing one in the middle, code updates otherwise."""
    failing = max(3, count // 2 + 1)  # after the first conversion (later code uses its field)
    plan = []
    for rev in range(1, count + 1):
        if rev == 1:
            plan.append(("example", rev))
        elif rev == failing:
            plan.append(("rollback", rev))
        elif rev % 10 == 2:
            plan.append(("conversion", rev))
        else:
            plan.append(("code", rev))
    return plan


def update_script(kind, rev):
    shape = "AB"[rev % 2]
    source = HEADER
    convert = fail = ""
    if kind in ("conversion", "rollback"):
        field, value = ("doomed", "True") if kind == "rollback" else ("generation", str(rev))
        source += CLASSES.replace("@FIELD@", field).replace("@VALUE@", value)
        convert = CONVERT
    source += SEND + RESPOND_PROLOGUE + RESPOND_BODY[shape] + UPDATE
    if kind == "rollback":
        fail = FAIL
        source = source.replace("rev @REV@", "rev @REV@ doomed").replace('"@REV@"', '"doomed"')
    return (source.replace("@CONVERT@", convert).replace("@FAIL@", fail)
            .replace("@NAME@", f"rev {rev} ({kind})").replace("@SHAPE@", shape)
            .replace("@REV@", str(rev)))


# -- processes ----------------------------------------------------------------------------------

class Lines:
    """The lines a process writes to one stream, read by a thread; wait_for(pattern)."""

    def __init__(self, stream):
        self.lines, self.ended = [], False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, pattern, timeout=WAIT):
        """The first match of regular expression ``pattern`` in a line; RuntimeError if none
        comes within ``timeout`` s."""
        regex = re.compile(pattern)

        def found():
            return next((m for m in map(regex.search, self.lines) if m), None)

        with self.changed:
            self.changed.wait_for(lambda: found() or self.ended, timeout)
            match = found()
        if match is None:
            raise RuntimeError(f"no line matching {pattern!r}; got: {self.lines[-20:]}")
        return match

    def wait_ended(self, timeout=WAIT):
        with self.changed:
            return self.changed.wait_for(lambda: self.ended, timeout)


def child_env():
    env = dict(os.environ)
    env.pop("PYMOULT_TOKEN", None)
    env.pop("PYMOULT_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    return env


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*command, sigint=False):
    """``command`` run by this Python, its output read by threads. ``sigint``: restore SIGINT's
    default disposition in the child, so that Ctrl-C (SIGINT) stops it even when this process
    runs in the background of a shell (preexec_fn: only before this process starts threads)."""
    process = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, bufsize=1, env=child_env(),
                               preexec_fn=_default_sigint if sigint else None)
    return process, Lines(process.stdout), Lines(process.stderr)


def stop(process):
    if process.poll() is None:
        process.kill()
    process.wait(WAIT)


def get(port):
    """One GET of ``/`` on a connection of its own: (status, X-Send-Rev, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.request("GET", "/", headers={"Authorization": AUTHORIZATION})
        response = connection.getresponse()
        return response.status, response.getheader("X-Send-Rev"), response.read().decode()
    finally:
        connection.close()


def push_cli(address, script_path):
    """``pymoult push SCRIPT --wait``: (exit code, output)."""
    done = subprocess.run([sys.executable, "-m", "pymoult", "push", str(script_path), "--wait",
                           "--timeout", "15", "--to", address], capture_output=True, text=True,
                          env=child_env(), timeout=WAIT + 15, check=False)
    return done.returncode, (done.stdout + done.stderr).strip()


# -- the run ------------------------------------------------------------------------------------

def apply_updates(address, port, plan, times, workdir, notes):
    """Push each update of ``plan`` at its time in ``times``; one row per update."""
    rows, applied_rev = [], None
    for (kind, rev), at in zip(plan, times):
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the schedule, not a synchronisation
        row = {"rev": rev, "kind": kind}
        if kind in ("example", "rollback"):
            path = EXAMPLE / "update.py"
            if kind == "rollback":
                path = pathlib.Path(workdir) / f"update_{rev}.py"
                path.write_text(update_script(kind, rev))
            row["start"] = time.monotonic()
            code, output = push_cli(address, path)
            row["end"] = time.monotonic()
            row["via"] = "pymoult push --wait"
            row["exit_code"] = code
            last = output.splitlines()[-1] if output else ""
            if kind == "example":
                row["state"] = "applied" if code == 0 and last == "ok" else "unexpected"
            else:
                row["state"] = "rolled back" if code == 1 and "rolled back" in output \
                    else "unexpected"
            if row["state"] == "unexpected":
                row["output"] = output
        else:
            script = update_script(kind, rev)
            row["start"] = time.monotonic()
            try:
                reply = client.push(address, script, wait=True, timeout=15)
            except Exception as exc:  # noqa: BLE001 (recorded and reported)
                reply = {"ok": False, "script_error": repr(exc), "updates": []}
            row["end"] = time.monotonic()
            row["via"] = "pymoult.client.push"
            states = [u["state"] for u in reply.get("updates", [])]
            row["state"] = states[0] if states == ["applied"] else "unexpected"
            if row["state"] == "unexpected":
                row["output"] = reply
        if row["state"] == "applied" and kind != "example":
            applied_rev = rev
        if row["state"] == "unexpected":
            notes.append(f"update {rev} ({kind}) did not end as expected: {row.get('output')}")
        if kind == "rollback":
            row["checks"] = check_rolled_back(address, port, applied_rev)
            notes.extend(f"after the rollback: {problem}" for problem in row["checks"]["problems"])
        rows.append(row)
    return rows, applied_rev


def check_rolled_back(address, port, applied_rev):
    """The application is unchanged and serving: a probe script inside it, and a GET."""
    problems, body = [], ""
    start = time.monotonic()
    try:
        reply = client.push(address, PROBE, wait=True, timeout=15)
        if not reply.get("ok") or reply.get("script_error"):
            problems.append(f"probe: {reply.get('script_error')}")
    except Exception as exc:  # noqa: BLE001 (recorded and reported)
        problems.append(f"probe: {exc!r}")
    probe_window = (start, time.monotonic())
    expected = str(applied_rev) if applied_rev is not None else None
    try:
        status, send_rev, body = get(port)
        if status != 200 or send_rev != expected or f"rev {expected}" not in body \
                or "doomed" in body:
            problems.append(f"GET after the rollback: {status}, X-Send-Rev {send_rev}, "
                            f"{body!r} (expected revision {expected})")
    except (OSError, http.client.HTTPException) as exc:
        problems.append(f"GET after the rollback: {exc!r}")
    return {"problems": problems, "probe_window": probe_window, "answer": body.strip()}


def classify(load, windows):
    """Group the requests (as lists of (latency, outcome)) by where they fall against the
    windows ((start, end, "update" or "probe"), which do not overlap one another):

    - "outside": in flight at no moment of any window;
    - "in_flight": in flight at some moment of an update window (sent before, or answered
      after, included). Long requests are likelier to overlap a window whatever slowed them, so
      this group's tail is biased upwards: an upper bound of the spike;
    - "sent_during": sent while an update window was open (the requests an update can hold);
    - "probe_only": overlapped only a probe window (neither outside nor during).

    Also returns, per window, how many requests overlapped it and their longest latency."""
    order = sorted(range(len(windows)), key=lambda i: windows[i][0])
    starts = [windows[i][0] for i in order]
    groups = {"outside": [], "in_flight": [], "sent_during": [], "probe_only": []}
    per_window = [[0, 0.0] for _ in windows]
    for sent, latency, outcome in zip(load["sent"], load["latency"], load["outcome"]):
        # the windows that started before this request ended, latest first, until one ended
        # before it was sent (the earlier ones did too)
        overlaps, sent_in_update = [], False
        for position in range(bisect.bisect_right(starts, sent + latency) - 1, -1, -1):
            index = order[position]
            w_start, w_end, w_kind = windows[index]
            if w_end < sent:
                break
            overlaps.append(w_kind)
            per_window[index][0] += 1
            per_window[index][1] = max(per_window[index][1], latency)
            sent_in_update |= w_kind == "update" and w_start <= sent
        if not overlaps:
            groups["outside"].append((latency, outcome))
        elif "update" in overlaps:
            groups["in_flight"].append((latency, outcome))
        else:
            groups["probe_only"].append((latency, outcome))
        if sent_in_update:
            groups["sent_during"].append((latency, outcome))
    return groups, per_window


def sender_stalls(load, interval):
    """Moments when the load generator sent nothing although no request was in flight, for
    longer than one client's ``interval`` (its pacing allows no such gap): the client process
    itself was not running, so the machine stalled it. Count and longest (ms)."""
    requests = sorted(zip(load["sent"], load["latency"]))
    busy_until, longest, count = None, 0.0, 0
    for sent, latency in requests:
        if busy_until is not None and sent - busy_until > max(interval, 0.001):
            count += 1
            longest = max(longest, sent - busy_until)
        busy_until = sent + latency if busy_until is None else max(busy_until, sent + latency)
    return {"count": count, "longest_ms": longest * 1e3}


def latency_row(group):
    latencies = [latency for latency, outcome in group if outcome != 2]
    ms = 1e3
    if not latencies:
        return {"requests": len(group)}
    return {"requests": len(group),
            "failed": sum(outcome == 1 for _, outcome in group),
            "connection_errors": sum(outcome == 2 for _, outcome in group),
            "median_ms": statistics.median(latencies) * ms,
            "p99_ms": percentile(latencies, 0.99) * ms,
            "max_ms": max(latencies) * ms}


def manager_records(address, names):
    """The ``runtime`` manager's history records of the updates named ``names``, by name."""
    reply = client.history(address)
    return {r["name"]: r for m in reply["managers"] if m["name"] == "runtime"
            for r in m["history"] if r["name"] in names}


def manager_times(record):
    """Seconds from the manager's record of one update: queued -> applied, how long new
    requests were held (gate installed -> released: the end of the pause), and the pause
    (alterable -> threads released)."""
    steps, pause = record["steps"], record["pause"]
    times = {"pause": pause}
    if "applied" in steps:
        times["queued_to_applied"] = steps["applied"]
    if pause is not None and "setup" in steps and "alterable" in steps:
        times["requests_held"] = steps["alterable"] + pause - steps["setup"]
    return times


def spread(values):
    """Median, p90 and max, in ms (None without values): with 100 updates a p99 would be the
    max."""
    if not values:
        return None
    return {"median": statistics.median(values) * 1e3, "p90": percentile(values, 0.9) * 1e3,
            "max": max(values) * 1e3}


def apply_figures(rows):
    """The apply figures over all updates and by kind: push round trip, and from the manager's
    history queued -> applied, requests held, pause."""
    def figures(selected):
        pushed = [r["end"] - r["start"] for r in selected if r["via"] == "pymoult.client.push"]
        times = [manager_times(r["manager"]) for r in selected if r["manager"]]
        result = {"updates": len(selected), "push_round_trip_ms": spread(pushed)}
        for key in ("queued_to_applied", "requests_held", "pause"):
            result[f"{key}_ms"] = spread([t[key] for t in times if t.get(key) is not None])
        return result

    by_kind = {kind: figures([r for r in rows if r["kind"] == kind])
               for kind in ("example", "code", "conversion", "rollback")}
    return {"all": figures(rows), "by_kind": by_kind}


def run(args):
    notes = []
    plan = update_plan(args.updates)
    workdir = tempfile.mkdtemp(prefix="pymoult-load-")
    app, app_out, app_err = start("-m", "pymoult", "run", str(EXAMPLE / "app.py"), "--port", "0",
                                  sigint=True)
    load = None
    try:
        address = app_err.wait_for("^" + re.escape(LISTENING) + "(.*)$").group(1)
        port = int(app_out.wait_for(r"^serving on http://127\.0\.0\.1:(\d+)/").group(1))
        load_path = pathlib.Path(workdir) / "load.json"
        load, load_out, load_err = start(
            str(LOAD), "--port", str(port), "--clients", str(args.clients), "--rate",
            str(args.rate), "--duration", str(args.duration), "--path", "/", "--path", "/report",
            "--auth", USER, "--out", str(load_path))
        started = float(load_out.wait_for(r"^start (\S+)$").group(1))
        first, last = started + args.warmup, started + args.duration - args.warmup
        step = (last - first) / max(1, len(plan) - 1)
        times = [first + i * step for i in range(len(plan))]
        rows, last_rev = apply_updates(address, port, plan, times, workdir, notes)
        load_out.wait_for(r"^done: ", timeout=args.duration + WAIT)  # raises if it never comes
        load.wait(WAIT)
        if load.returncode != 0:
            raise RuntimeError(f"the load generator failed: {load_err.lines[-20:]}")
        results = json.loads(load_path.read_text())

        status, send_rev, body = get(port)  # after everything: the last revision serves
        if status != 200 or send_rev != str(last_rev):
            notes.append(f"final GET: {status}, X-Send-Rev {send_rev}, {body!r}")
        names = {f"rev {rev} ({kind})" for kind, rev in plan if kind != "example"}
        names.add("add authentication")
        history = manager_records(address, names)

        app.send_signal(signal.SIGINT)  # Ctrl-C: the example stops and counts its requests
        app.wait(WAIT)
        app_err.wait_ended()
        app_out.wait_ended()
        stopped = app_out.wait_for(r"^stopped after (\d+) requests on (\d+) connections$")
        server = {"requests": int(stopped.group(1)), "connections": int(stopped.group(2)),
                  "exit_code": app.returncode}
        stderr = [line for line in app_err.lines if not line.startswith(LISTENING)]
        server["stderr_lines"], server["stderr_head"] = len(stderr), stderr[:20]
    finally:
        for process in (load, app):
            if process is not None:
                stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
    return plan, rows, results, history, server, notes


def summarise(args, plan, rows, load, history, server, notes):
    windows = [(r["start"], r["end"], "update") for r in rows]
    windows += [(*r["checks"]["probe_window"], "probe") for r in rows if "checks" in r]
    groups, per_window = classify(load, windows)
    for row in rows:
        name = ("add authentication" if row["kind"] == "example"
                else f"rev {row['rev']} ({row['kind']})")
        row["manager"] = history.get(name)
        if row["manager"] is None:
            notes.append(f"update {row['rev']} is not in the manager's history")
    for row, (count, longest) in zip(rows, per_window):  # the update windows come first
        row["requests_overlapping"] = count
        row["longest_overlapping_ms"] = longest * 1e3
    outcomes = load["outcome"]
    latencies = [latency for latency, outcome in zip(load["latency"], outcomes) if outcome != 2]
    own_gets = 1 + sum("checks" in r for r in rows)  # the benchmark's own GETs
    by_state = {}
    for row in rows:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
    stalls = sender_stalls(load, 1.0 / args.rate if args.rate else 0.0)
    results = {
        "settings": {"clients": args.clients, "rate_per_client": args.rate,
                     "duration_s": args.duration, "updates": args.updates,
                     "paths": load["paths"]},
        "requests": {
            "sent": len(outcomes),
            "served": outcomes.count(0),
            "failed": outcomes.count(1),
            "connection_errors": outcomes.count(2),
            "per_second": len(outcomes) / (load["end"] - load["start"]),
            "problems": load["problems"],
            "problem_examples": load["problem_examples"],
            "load_generator_stalls": stalls,
        },
        "server": {**server, "expected_requests": len(outcomes) - outcomes.count(2) + own_gets,
                   "expected_connections": args.clients + own_gets},
        "updates": {
            "planned": len(plan),
            "by_kind": {kind: sum(k == kind for k, _ in plan) for kind in
                        ("example", "code", "conversion", "rollback")},
            "applied": by_state.get("applied", 0),
            "rolled_back": by_state.get("rolled back", 0),
            "unexpected": by_state.get("unexpected", 0),
            "apply": apply_figures(rows),
            "rollback_checks": [r["checks"] for r in rows if "checks" in r],
        },
        "latency": {
            "all": {"median_ms": statistics.median(latencies) * 1e3,
                    "p99_ms": percentile(latencies, 0.99) * 1e3,
                    "max_ms": max(latencies) * 1e3},
            "outside_updates": latency_row(groups["outside"]),
            "sent_during_updates": latency_row(groups["sent_during"]),
            "in_flight_during_updates": latency_row(groups["in_flight"]),
            "probe_only": len(groups["probe_only"]),
            "time_in_update_windows_s": sum(r["end"] - r["start"] for r in rows),
        },
        "notes": notes,
        "updates_detail": [{k: v for k, v in row.items() if k not in ("checks",)}
                           for row in rows],
    }
    return results


def print_table(results):
    req, upd, lat, server = (results["requests"], results["updates"], results["latency"],
                             results["server"])
    s = results["settings"]
    print(f"Pymoult under-load benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs: "
          f"examples/http_auth under pymoult run, {s['clients']} keep-alive clients x "
          f"{s['rate_per_client']:g} req/s for {s['duration_s']:g} s from another process")
    print(f"  requests sent {req['sent']:,} ({req['per_second']:.0f}/s): served {req['served']:,}, "
          f"failed {req['failed']} (target 0), connection errors {req['connection_errors']}")
    if req["problems"]:
        print(f"    problems: {req['problems']}")
        for example in req["problem_examples"]:
            print(f"      {example}")
    stalls = req["load_generator_stalls"]
    print(f"  load generator stalls (no request in flight, none sent for over one client's "
          f"interval: the machine did not run it): {stalls['count']}"
          + (f", longest {stalls['longest_ms']:.0f} ms" if stalls["count"] else ""))
    print(f"  server counted {server['requests']:,} requests (expected "
          f"{server['expected_requests']:,}) on {server['connections']} connections (expected "
          f"{server['expected_connections']}: none dropped), exit code {server['exit_code']}")
    kinds = ", ".join(f"{count} {kind}" for kind, count in upd["by_kind"].items())
    print(f"  updates: {upd['planned']} ({kinds}): applied {upd['applied']}, rolled back "
          f"{upd['rolled_back']}, unexpected {upd['unexpected']}")
    for check in upd["rollback_checks"]:
        verdict = "unchanged and serving" if not check["problems"] else check["problems"]
        print(f"    after the rollback: {verdict} ({check['answer']!r})")
    print(f"\n  {'latency, ms':36} {'requests':>9} {'median':>8} {'p99':>8} {'max':>8}")
    for label, key in (("outside update windows", "outside_updates"),
                       ("sent during an update window", "sent_during_updates"),
                       ("in flight during an update window", "in_flight_during_updates")):
        row = lat[key]
        if "median_ms" in row:
            print(f"  {label:36} {row['requests']:9,} {row['median_ms']:8.2f} "
                  f"{row['p99_ms']:8.2f} {row['max_ms']:8.2f}")
        else:
            print(f"  {label:36} {row['requests']:9,} {'-':>8} {'-':>8} {'-':>8}")
    row = lat["all"]
    print(f"  {'all requests':36} {req['sent']:9,} {row['median_ms']:8.2f} {row['p99_ms']:8.2f} "
          f"{row['max_ms']:8.2f}")
    print(f"  (update windows: {lat['time_in_update_windows_s']:.2f} s of "
          f"{s['duration_s']:g} s)")
    slowest = sorted(results["updates_detail"], key=lambda r: -r["longest_overlapping_ms"])[:3]
    print("  longest request by update: " + ", ".join(
        f"{r['longest_overlapping_ms']:.0f} ms (rev {r['rev']}, {r['kind']}, window "
        f"{(r['end'] - r['start']) * 1e3:.0f} ms)" for r in slowest))
    print(f"\n  {'update apply, ms':36} {'median':>8} {'p90':>8} {'max':>8}")
    apply = upd["apply"]
    for label, key in (("push round trip (client.push, wait)", "push_round_trip_ms"),
                       ("queued -> applied (manager)", "queued_to_applied_ms"),
                       ("new requests held (gate up)", "requests_held_ms"),
                       ("pause (alterable -> released)", "pause_ms")):
        row = apply["all"][key]
        if row:
            print(f"  {label:36} {row['median']:8.2f} {row['p90']:8.2f} {row['max']:8.2f}")
    print("  pause by kind, median / max ms: " + ", ".join(
        f"{kind} {row['pause_ms']['median']:.2f} / {row['pause_ms']['max']:.2f}"
        for kind, row in apply["by_kind"].items() if row["pause_ms"]))
    for note in results["notes"]:
        print(f"  NOTE: {note}")
    if server["stderr_lines"]:
        print(f"  NOTE: the application wrote {server['stderr_lines']} lines to stderr, first:")
        for line in server["stderr_head"][:8]:
            print(f"    {line}")


def main():
    parser = argparse.ArgumentParser(description="Pymoult under-load benchmark")
    parser.add_argument("--quick", action="store_true", help="30 updates in 6 s")
    parser.add_argument("--json", default=str(RESULTS / "under_load.json"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s per client")
    parser.add_argument("--duration", type=float, help="seconds of load (default 20, quick 6)")
    parser.add_argument("--updates", type=int, help="updates to apply (default 100, quick 30)")
    args = parser.parse_args()
    args.duration = args.duration or (6.0 if args.quick else 20.0)
    args.updates = args.updates or (30 if args.quick else 100)
    if args.updates < 3:
        parser.error("--updates: at least 3 (the example's, a conversion, the failing one)")
    args.warmup = min(1.5, args.duration / 6)  # load without updates at both ends

    plan, rows, load, history, server, notes = run(args)
    results = summarise(args, plan, rows, load, history, server, notes)
    print_table(results)
    write_json(results, args.json)


if __name__ == "__main__":
    main()
