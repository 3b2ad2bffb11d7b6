"""Run an example of ``examples/`` as its README says: ``pymoult run app.py`` in a process of
its own, its update scripts sent with ``pymoult push --wait``."""

import pathlib
import subprocess
import sys

from app_process import WAIT, App, _default_sigint, _Lines, command_env, pymoult
from pymoult.cli import LISTENING

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


class ExampleApp(App):
    """``pymoult run examples/<name>/app.py *args`` (``App`` passes no application arguments)."""

    def __init__(self, name, *args):
        self.directory = EXAMPLES / name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pymoult", "run", str(self.directory / "app.py"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            env=command_env(), preexec_fn=_default_sigint)
        self.stdout, self.stderr = _Lines(self.process.stdout), _Lines(self.process.stderr)
        try:
            line = self.stderr.wait_for(lambda line: line.startswith(LISTENING))[0]
        except BaseException:
            self.close()
            raise
        self.address = line[len(LISTENING):]

    def push(self, script="update.py"):
        """``pymoult push --wait`` the example's script; its output, once every update applied."""
        pushed = pymoult("push", str(self.directory / script), "--wait", "--timeout", "15",
                         "--to", self.address)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert pushed.stdout.splitlines()[-1] == "ok", pushed.stdout
        return pushed.stdout

    def lines(self, prefix):
        """The output lines so far that start with ``prefix``."""
        return [line for line in list(self.stdout.lines) if line.startswith(prefix)]

    def stop(self):
        """Ctrl-C, as a user ends an example; its exit code (0: it caught the interrupt), once
        all its output has been read."""
        self.interrupt()
        code = self.wait(WAIT)
        for stream in (self.stdout, self.stderr):
            with stream._changed:
                assert stream._changed.wait_for(lambda: stream.ended, WAIT)
        return code


def start(request, name, *args):
    """An example app for the test ``request``, killed at teardown if still running."""
    app = ExampleApp(name, *args)
    request.addfinalizer(app.close)
    return app
