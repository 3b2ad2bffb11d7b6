"""The asyncio example end to end: a coroutine handler redefined in a running asyncio server.
Connections whose handler is suspended in an ``await`` keep the version they started with, new
connections run the new one, and while the loop's thread is held no coroutine runs, the server's
included. Run under ``pymoult run`` and ``pymoult push``, and under ``pymoult demo``."""

import os
import re
import signal
import subprocess
import sys

import pytest

from app_process import command_env, pymoult
from example_app import start

pytestmark = pytest.mark.timeout(60)

DEMO_TIMEOUT = 45
#: Seconds the probe waits for a reply while the loop's thread is held: a round of the example
#: (two requests answered) is printed every few milliseconds with --interval 0.01.
QUIET = 0.3

KEPT = re.compile(r"round (\d+): hello kept from version 1, reply (\d+) \| ")
NEW = re.compile(r"\| (hello new from version 1|HELLO NEW from version 2), reply 1$")

#: An update that changes nothing: while it holds the Runner (the thread of the event loop),
#: after its apply window, it asks the server for a reply and counts the client's rounds.
PROBE = """
import socket
import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import Update

app = sys.modules["__main__"]


class Probe(Update):
    suspension = {suspension!r}

    def apply(self):
        pass

    def preresume_setup(self):  # the Runner still held
        rounds = app.rounds
        self.connection = socket.create_connection(("127.0.0.1", {port}), timeout=10)
        self.connection.sendall(b"probe\\n")
        self.connection.settimeout({quiet})
        try:
            self.held_reply = self.connection.recv(100).decode().strip()
        except socket.timeout:
            self.held_reply = None
        self.held_rounds = app.rounds - rounds


probe = Probe(name="probe", threads=[get_runner()], timeout=10)
fetch_manager("runtime").add_update(probe).result(timeout=15)
probe.connection.settimeout(10)
reply = probe.connection.makefile().readline().strip()
probe.connection.close()
sys.stdout.write(f"probe: while held: reply {{probe.held_reply!r}}, rounds {{probe.held_rounds}}; "
                 f"resumed: {{reply}}\\n")
sys.stdout.flush()
"""


def port_of(app):
    line = app.stdout.wait_for(lambda line: line.startswith("serving on "))[0]
    return int(line.rsplit(":", 1)[1])


def test_running_handlers_keep_their_version_and_new_connections_run_the_new_one(request):
    app = start(request, "asyncio_server", "--interval", "0.01")
    app.stdout.wait_for(lambda line: line.startswith("round "), count=3)
    assert "update 'redefine handle': applied" in app.push()
    app.stdout.wait_for(lambda line: "from version 2" in line, count=3)
    assert app.stop() == 0
    rounds = app.lines("round ")
    # the kept connection's handler, suspended in its await when the update came, still runs
    # version 1, its own reply count going on: one reply per round, every round
    kept = [KEPT.match(line) for line in rounds]
    assert all(kept), rounds
    assert [(int(m.group(1)), int(m.group(2))) for m in kept] == \
        [(n, n) for n in range(1, len(rounds) + 1)]
    # each new connection runs the version of handle current when it was opened: 1, then 2
    new = [NEW.search(line) for line in rounds]
    assert all(new), rounds
    versions = ["version 2" in m.group(1) for m in new]
    assert versions == sorted(versions) and versions.count(False) >= 3
    assert app.stdout.lines[-1] in (f"stopped after {len(rounds)} rounds",
                                    f"stopped after {len(rounds) + 1} rounds")


def probe(app, suspension):
    """Push PROBE; the line it prints: what the server and the client did while held."""
    script = PROBE.format(suspension=suspension, port=port_of(app), quiet=QUIET)
    pushed = pymoult("push", "-", "--wait", "--to", app.address, stdin=script)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    return app.stdout.wait_for(lambda line: line.startswith("probe: "))[0]


def test_an_update_point_in_a_coroutine_parks_the_whole_loop(request):
    # the example's only update point is in its client coroutine, between two rounds
    app = start(request, "asyncio_server", "--interval", "0.01")
    app.stdout.wait_for(lambda line: line.startswith("round "), count=3)
    line = probe(app, "points")
    # held there, neither the client nor the server ran: no round, no reply; once resumed,
    # the server answered the connection made meanwhile
    assert line == "probe: while held: reply None, rounds 0; " \
                   "resumed: hello probe from version 1, reply 1", line
    app.stdout.wait_for(lambda line: line.startswith("round "), count=len(app.lines("round ")) + 3)
    assert app.stop() == 0


def test_a_loop_waiting_for_events_is_held_where_it_waits(request):
    # suspension anywhere, the default: the loop sleeps in its selector until the next round,
    # 30 s away, and counts as suspended there; the probe's connection wakes it, and it parks
    # before it runs any coroutine
    app = start(request, "asyncio_server", "--interval", "30")
    app.stdout.wait_for(lambda line: line.startswith("round 1:"))
    line = probe(app, "anywhere")
    assert line == "probe: while held: reply None, rounds 0; " \
                   "resumed: hello probe from version 1, reply 1", line
    # no Ctrl-C: it would land only when the selector's 30 s wait returns (teardown kills it)


def test_the_demo_runs_the_asyncio_example_in_one_command():
    process = subprocess.Popen(
        [sys.executable, "-m", "pymoult", "demo", "asyncio_server", "--interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=command_env(),
        start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the demo, its application too
        process.communicate()
        raise
    assert process.returncode == 0, stdout + stderr
    assert re.search(r"pymoult push \S*examples/asyncio_server/update\.py --wait --to unix:",
                     stdout)
    assert "push | update 'redefine handle': applied" in stdout
    before, _, after = stdout.partition("    push | ok\n")
    assert len(re.findall(r"\| hello new from version 1", before)) >= 3
    assert len(re.findall(r"\| HELLO NEW from version 2", after)) >= 3
    assert "from version 2" not in re.sub(r"\| HELLO NEW from version 2", "", stdout)
    assert re.search(r"app \| stopped after \d+ rounds", stdout)
    assert "The application exited with code 0." in stdout
