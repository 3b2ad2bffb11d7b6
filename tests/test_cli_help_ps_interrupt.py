"""The command as a new user meets it: ``--version``, a description on every help page,
``pymoult ps`` and ``--to PID``, and one line (no traceback) on Ctrl-C during a push."""

import json
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from app_process import WAIT, App, _default_sigint, command_env, pymoult
from pymoult import __version__, client

pytestmark = pytest.mark.timeout(60)

GREETER = """
import threading, time
from pymoult.lowlevel.alterability import staticUpdatePoint

gate = threading.Event()

def greet(n):
    return f"v1 #{n}"

n = 0
while True:
    n += 1
    print(greet(n), flush=True)
    staticUpdatePoint()
    time.sleep(0.02)
"""

#: An update whose setup waits for the application's gate (so that a push --wait waits).
HELD = """
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.relinking import redefineFunction

app = sys.modules["__main__"]

class Held(Update):
    def preupdate_setup(self):
        app.gate.wait(30)
    def apply(self):
        redefineFunction(app, "greet", lambda n: f"v2 #{n}")

fetch_manager("runtime").add_update(Held("held", threads=[get_runner()], timeout=10))
"""


@pytest.fixture
def greeter(tmp_path):
    path = tmp_path / "greeter.py"
    path.write_text(textwrap.dedent(GREETER))
    process = App(path)
    process.stdout.wait_for(lambda line: line.startswith("v1"))
    yield process
    process.close()


def test_version():
    result = pymoult("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pymoult {__version__} (Python {sys.version.split()[0]})"


@pytest.mark.parametrize("command", ["run", "push", "rollback", "status", "history", "ps",
                                     "token", "demo"])
def test_every_help_page_has_a_description(command):
    from pymoult.cli import build_parser

    parser = build_parser()
    [sub] = [action for action in parser._subparsers._group_actions]
    page = sub.choices[command]
    assert page.description and len(page.description) > 40, command


def test_ps_lists_a_running_application_and_to_takes_its_pid(greeter):
    listed = pymoult("ps", "--json")
    assert listed.returncode == 0, listed.stderr
    [record] = [r for r in json.loads(listed.stdout) if r["pid"] == greeter.process.pid]
    assert record["address"] == greeter.address
    assert record["application"].endswith("greeter.py")
    table = pymoult("ps").stdout.splitlines()
    assert table[0].split() == ["pid", "address", "running", "for", "application"]
    assert any(line.split()[:2] == [str(greeter.process.pid), greeter.address]
               for line in table[2:])
    status = pymoult("status", "--to", str(greeter.process.pid), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["listener"]["address"] == greeter.address


def test_a_process_gone_is_not_listed_and_its_pid_is_refused(greeter):
    pid = greeter.process.pid
    greeter.interrupt()  # Ctrl-C: the application stops, the runtime removes its record
    assert greeter.wait() == 130
    assert pid not in [r["pid"] for r in json.loads(pymoult("ps", "--json").stdout)]
    refused = pymoult("status", "--to", str(pid))
    assert refused.returncode == 2
    assert f"no running application with pid {pid}" in refused.stderr


def test_ctrl_c_during_push_wait_says_in_one_line_that_the_update_goes_on(greeter, tmp_path):
    script = tmp_path / "held.py"
    script.write_text(HELD)
    push = subprocess.Popen([sys.executable, "-m", "pymoult", "push", str(script), "--wait",
                             "--to", greeter.address], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=command_env(),
                            preexec_fn=_default_sigint)
    try:
        held = threading.Event()
        for _ in range(200):  # until the update is in its setup, held by the gate
            managers = client.status(greeter.address, timeout=WAIT)["managers"]
            if any((m.get("current") or {}).get("name") == "held" for m in managers):
                held.set()
                break
            held.wait(0.05)
        assert held.is_set()
        push.send_signal(signal.SIGINT)
        out, err = push.communicate(timeout=WAIT)
    finally:
        if push.poll() is None:
            push.kill()
    assert push.returncode == 130
    assert err.strip() == ("pymoult push: interrupted; what was sent goes on in the application "
                           "(its updates apply or fail there; pymoult status shows them), and "
                           "nothing more is sent")
    assert "Traceback" not in err and out == ""
    opened = client.push(greeter.address, "import sys\nsys.modules['__main__'].gate.set()\n",
                         timeout=WAIT)
    assert opened["ok"]
    greeter.stdout.wait_for(lambda line: line.startswith("v2"))  # the update went on


def test_demo_help_lists_the_examples_with_what_each_shows():
    result = pymoult("demo", "--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    start = lines.index("examples:") + 1
    end = lines.index("", start)
    listed = dict(line.split(None, 1) for line in lines[start:end])
    assert listed["hello"] == ("Hello world, updated live: ``greet`` is redefined while the "
                               "program greets.")
    from pymoult.demo import known_examples
    assert sorted(listed) == [name for name, _ in known_examples()]
