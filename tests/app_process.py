"""Start ``pymoult`` commands as real processes and read their output without guessing."""

import os
import signal
import subprocess
import sys
import threading

from pymoult.cli import LISTENING

WAIT = 20.0
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_env(**extra):
    """The environment of a child ``pymoult``: this checkout importable, no inherited token."""
    env = dict(os.environ)
    env.pop("PYMOULT_TOKEN", None)
    env.pop("PYMOULT_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECT, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def pymoult(*args, env=None, stdin=None, timeout=WAIT):
    """Run a ``pymoult`` command to its end: a CompletedProcess with text output."""
    return subprocess.run([sys.executable, "-m", "pymoult", *args], capture_output=True,
                          text=True, env=env or command_env(), input=stdin, timeout=timeout)


class _Lines:
    def __init__(self, stream):
        self.lines, self.ended = [], False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, predicate, count=1, timeout=WAIT):
        """The first ``count`` lines matching ``predicate``; AssertionError if they never come."""
        def found():
            return [line for line in self.lines if predicate(line)]

        with self._changed:
            self._changed.wait_for(lambda: self.ended or len(found()) >= count, timeout)
            matches = found()
        assert len(matches) >= count, f"expected {count} matching line(s), got: {self.lines}"
        return matches[:count]

    def text(self):
        with self._changed:
            return "\n".join(self.lines)


def _default_sigint():
    # a test run started in the background of a non-interactive shell ignores SIGINT, and
    # children inherit that: the Ctrl-C tests need the default disposition
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class App:
    """``pymoult run [options] app.py`` as a process, in a process group of its own;
    ``address`` once it listens."""

    _own_group = False  # subclasses that start their process otherwise

    def __init__(self, app_path, *options, env=None, listens=True):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pymoult", "run", *options, str(app_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            env=env or command_env(), preexec_fn=_default_sigint, start_new_session=True)
        self._own_group = True
        self.stdout, self.stderr = _Lines(self.process.stdout), _Lines(self.process.stderr)
        self.address = None
        if listens:
            try:
                line = self.stderr.wait_for(lambda line: line.startswith(LISTENING))[0]
            except BaseException:
                self.close()
                raise
            self.address = line[len(LISTENING):]

    def interrupt(self):
        self.process.send_signal(signal.SIGINT)

    def wait(self, timeout=WAIT):
        return self.process.wait(timeout)

    def ended(self, timeout=WAIT):
        """Wait for the process and for the end of both outputs; its exit code."""
        code = self.process.wait(timeout)
        for stream in (self.stdout, self.stderr):
            with stream._changed:
                assert stream._changed.wait_for(lambda: stream.ended, timeout)
        return code

    def close(self):
        """Kill the process (and anything it started, in its group) unless it has ended."""
        if self.process.returncode is None:  # not reaped yet: its pid cannot be reused
            if self._own_group:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:  # ended meanwhile, and nothing else in its group
                    pass
            else:
                self.process.kill()
        self.process.wait(WAIT)
