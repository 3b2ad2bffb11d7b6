"""``pymoult demo``: start an application under ``pymoult run``, update it live, show it.

The application greets every 0.2 s from its Runner thread, passing an update point each time.
The demo pushes an update script that redefines ``greet`` (the application's counter goes on:
no restart), waits for the outcome, shows a few greetings of the new version, then pushes a
second script that asks the application to finish, and reports its exit code.
"""

import os
import subprocess
import sys
import tempfile
import threading

from . import client
from .cli import LISTENING

APP = '''\
import time
from pymoult.lowlevel.alterability import staticUpdatePoint

running = True


def greet(n):
    return f"hello #{n} from version 1"


count = 0
while running and count < 600:
    count += 1
    print(greet(count), flush=True)
    staticUpdatePoint("after greeting")
    time.sleep(0.2)
print(f"application: finished after {count} greetings", flush=True)
'''

UPDATE = '''\
#parsed
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import SafeRedefineUpdate

app = sys.modules["__main__"]


def greet(n):
    return f"hello #{n} from version 2 (updated live, counter kept)"


fetch_manager("runtime").add_update(
    SafeRedefineUpdate(app, "greet", greet, threads=[get_runner()], timeout=10))
'''

FINISH = '''\
import sys
sys.modules["__main__"].running = False
'''

WAIT = 20.0


class _Output:
    """Echo the application's lines; let the demo wait for one that matches."""

    def __init__(self, stream):
        self.lines, self._changed = [], threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            print(f"  app | {line.rstrip()}", flush=True)
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append(None)  # end of output
            self._changed.notify_all()

    def wait_for(self, predicate, count=1):
        """Wait until ``count`` lines satisfy ``predicate``; False at the end of output."""
        def enough():
            return sum(1 for line in self.lines if line and predicate(line)) >= count

        with self._changed:
            self._changed.wait_for(lambda: None in self.lines or enough(), WAIT)
            return enough()


def demo():
    """Run the demo; returns 0 when the application was updated and finished cleanly."""
    with tempfile.TemporaryDirectory(prefix="pymoult-demo-") as work:
        app_path = os.path.join(work, "app.py")
        with open(app_path, "w") as out:
            out.write(APP)
        print("Starting the application under the Pymoult runtime:")
        print(f"  pymoult run {app_path}")
        process = subprocess.Popen([sys.executable, "-m", "pymoult", "run", app_path],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1)
        try:
            return _drive(process)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(WAIT)


def _drive(process):
    output = _Output(process.stdout)
    if not output.wait_for(lambda line: "version 1" in line, count=3):
        print("demo: the application did not start greeting", file=sys.stderr)
        return 1
    announced = [line for line in output.lines if line and line.startswith(LISTENING)]
    if not announced:
        print("demo: the runtime did not say where it listens", file=sys.stderr)
        return 1
    address = announced[0][len(LISTENING):].strip()
    print(f"\nPushing an update that redefines greet() (pymoult push --wait --to {address}):")
    reply = client.push(address, UPDATE, wait=True, timeout=WAIT)
    for update in reply["updates"]:
        print(f"  update {update['name']!r}: {update['state']}"
              + (f" - {update['error']}" if update["error"] else ""))
    if not reply["ok"]:
        print(f"demo: the update failed: {reply}", file=sys.stderr)
        return 1
    if not output.wait_for(lambda line: "version 2" in line, count=3):
        print("demo: the application did not greet from version 2", file=sys.stderr)
        return 1
    print("\nThe same process, the same counter, the new code. Asking it to finish:")
    client.push(address, FINISH, wait=True, timeout=WAIT)
    code = process.wait(WAIT)
    print(f"\nThe application exited with code {code}.")
    return 0 if code == 0 else 1
