"""``pymoult demo [EXAMPLE [ARGUMENTS...]]``: run an application under ``pymoult run``, update it
live with ``pymoult push --wait``, show the change, then stop it with Ctrl-C as a user would.

Without EXAMPLE the demo runs a built-in hello world, so that it works without a source
checkout: the application greets every 0.2 s from its Runner thread, passing an update point
each time; the update redefines ``greet``, and the counter goes on (no restart).

EXAMPLE is a directory holding ``app.py`` and ``update.py`` (and maybe ``update2.py``,
``update3.py``...): a path, or the name of one of the checkout's ``examples/`` (looked up under
``./examples``, then next to the ``pymoult`` package; see :func:`find_example`). ARGUMENTS go
to ``app.py``. When the directory also has a ``client.py`` (the servers do), the demo starts
``python client.py URL`` with the first URL the application printed, so that a client is
connected and working while the update lands. The steps:

1. start the application (and the client); wait until it has printed ``SHOWN`` lines (the
   client, when there is one);
2. push each update script, in the order of their numbers, with the command a user would
   type, and show its outcome;
3. wait for ``SHOWN`` more lines: the new version at work;
4. send Ctrl-C (SIGINT) to the client, then to the application, and report their exit codes.

Every line the processes print is shown, prefixed with the process it comes from. The demo
exits 0 when every update applied and every process stopped on Ctrl-C (exit code 0; or 130,
an application that lets KeyboardInterrupt through); 1 otherwise, the reason on stderr; 2 for
an unknown example; 130 when the demo itself is interrupted (the terminal's Ctrl-C reaches its
processes too), 143 or 129 when SIGTERM or SIGHUP stopped it (it passes them on as a Ctrl-C).
A process still running 5 s after its Ctrl-C is killed.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import NoReturn

from .exit_status import FAILED, LISTENING, USAGE_ERROR

#: Lines of activity shown before the update, and again after it.
SHOWN = 3
#: Seconds allowed for each step (a line to appear, a push to be applied).
WAIT = 20.0
#: Seconds a process has to stop after its Ctrl-C before it is killed.
STOP_GRACE = 5.0
#: Where ``pymoult demo NAME`` looks for NAME besides ``./examples``: a source checkout's.
CHECKOUT_EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
#: The address a server example prints, given to its client (without a final full stop).
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S*[^\s.,;:)'\"]")
#: Exit codes of a process stopped by Ctrl-C: its own (0), ``pymoult run``'s for an application
#: that let KeyboardInterrupt through (130), Python's for a plain script that did (-SIGINT).
STOPPED = {0, 130, -signal.SIGINT}

APP = '''\
"""Greets from the Runner thread, passing an update point after each greeting."""
import time

from pymoult.lowlevel.alterability import staticUpdatePoint


def greet(n):
    return f"hello #{n} from version 1"


count = 0
try:
    while True:
        count += 1
        print(greet(count), flush=True)
        staticUpdatePoint("after greeting")
        time.sleep(0.2)
except KeyboardInterrupt:
    print(f"stopped after {count} greetings", flush=True)
'''

UPDATE = '''\
#parsed
"""Redefine ``greet`` in the running application, at the Runner's next update point."""
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


#: The processes of a demo: how their lines are prefixed, and how the demo names them.
_TITLES = {"app": "application", "client": "client"}


class NoSuchExample(LookupError):
    """``pymoult demo NAME``: NAME is neither an example's directory nor one of the examples."""


def find_example(name: str) -> pathlib.Path:
    """The example directory ``name`` designates. A path (it holds a ``/``, or is ``.`` or
    ``..``) designates that directory; a name, the first complete example of that name under
    ``./examples``, then under the checkout's ``examples/``. Complete: it holds ``app.py`` and
    at least one update script (see :func:`update_scripts`)."""
    if os.sep in name or "/" in name or name in (".", ".."):
        directory = pathlib.Path(name)
        if not directory.is_dir():
            raise NoSuchExample(f"no directory {name}")
        if not (directory / "app.py").is_file():
            raise NoSuchExample(f"{name} holds no app.py")
        if not update_scripts(directory):
            raise NoSuchExample(f"{name} holds no update script (update.py, update2.py...)")
        return directory.resolve()
    for root in _EXAMPLE_ROOTS:
        if _complete(root / name):
            return (root / name).resolve()
    known = [name for name, _ in known_examples()]
    hint = f"one of: {', '.join(known)}" if known else \
        "none found here (the examples are in Pymoult's source checkout)"
    raise NoSuchExample(f"no example {name!r}: give the path of a directory holding app.py and "
                        f"update.py, or the name of an example, {hint}")


def known_examples() -> list[tuple[str, str]]:
    """``(name, summary)`` of every example ``pymoult demo NAME`` finds (see
    :func:`find_example`), by name: the summary is the first line of its ``app.py``'s
    docstring ("" without one)."""
    found: dict[str, str] = {}
    for root in _EXAMPLE_ROOTS:
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if path.name not in found and _complete(path):
                found[path.name] = _summary(path / "app.py")
    return sorted(found.items())


def _summary(app: pathlib.Path) -> str:
    try:
        text = app.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    match = re.match(r'\s*(?:"""|\'\'\')\s*([^\n]*)', text)
    return match.group(1).strip().rstrip('"\'') if match else ""


#: Where ``pymoult demo NAME`` looks for NAME, in this order.
_EXAMPLE_ROOTS = (pathlib.Path("examples"), CHECKOUT_EXAMPLES)
_UPDATE_SCRIPT = re.compile(r"update(\d*)\.py")


def _complete(directory: pathlib.Path) -> bool:
    return (directory / "app.py").is_file() and bool(update_scripts(directory))


def update_scripts(directory: pathlib.Path) -> list[pathlib.Path]:
    """The update scripts of an example: ``update.py``, then ``update2.py``, ``update3.py``...
    in the order of their numbers (other files, ``update_helpers.py`` say, are not pushed)."""
    found: list[tuple[int, str, pathlib.Path]] = []
    for path in directory.glob("update*.py"):
        match = _UPDATE_SCRIPT.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1) or 1), match.group(1), path))
    return [path for _, _, path in sorted(found)]


def demo(example: str | None = None, arguments: Iterable[str] = ()) -> int:
    """Run the demo of ``example`` (None: the built-in one); its exit code."""
    if example is None:
        with tempfile.TemporaryDirectory(prefix="pymoult-demo-") as work:
            directory = pathlib.Path(work)
            (directory / "app.py").write_text(APP)
            (directory / "update.py").write_text(UPDATE)
            return _Demo(directory, arguments).run()
    try:
        directory = find_example(example)
    except NoSuchExample as exc:
        print(f"pymoult demo: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return _Demo(directory, arguments).run()


class _Console:
    """Show the lines of several processes as they come, each prefixed with its process's name,
    and let the demo wait for lines; the demo's own lines go through it too, so that no two
    lines mix."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []  # (process name, line), in the order shown
        self.ended: set[str] = set()  # processes whose output has ended
        self._changed = threading.Condition()

    def say(self, text: str) -> None:
        with self._changed:
            print(text, flush=True)

    def follow(self, name: str, stream: Iterable[str]) -> None:
        threading.Thread(target=self._read, args=(name, stream), daemon=True,
                         name=f"pymoult demo: {name} output").start()

    def _read(self, name: str, stream: Iterable[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            with self._changed:
                print(f"  {name:>6} | {line}", flush=True)
                self.lines.append((name, line))
                self._changed.notify_all()
        with self._changed:
            self.ended.add(name)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[str, str], object], count: int = 1,
                 since: int = 0) -> tuple[str, str] | None:
        """The ``count``-th line from index ``since`` on for which ``predicate(name, line)``
        holds; None if it has not come within ``WAIT`` seconds, or once a process's output
        has ended (it stopped: what the demo waits for may never come)."""
        def found() -> list[tuple[str, str]]:
            return [entry for entry in self.lines[since:] if predicate(*entry)]

        with self._changed:
            self._changed.wait_for(lambda: len(found()) >= count or self.ended, WAIT)
            matches = found()
        return matches[count - 1] if len(matches) >= count else None

    def wait_ended(self, name: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: name in self.ended, timeout)


def _shown(path: str | os.PathLike[str]) -> str:
    """``path`` as the user would type it: relative to the current directory if inside it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached the demo: it stops its processes before it ends."""


def _raise_stopped(signum: int, frame: FrameType | None) -> NoReturn:
    raise _Stopped(signal.Signals(signum).name)


class _Demo:
    def __init__(self, directory: pathlib.Path, arguments: Iterable[str]) -> None:
        self.directory = directory
        self.arguments = list(arguments)
        self.console = _Console()
        self.processes: dict[str, subprocess.Popen[str]] = {}  # name -> Popen, in start order

    def run(self) -> int:
        # Ctrl-C in the terminal reaches the demo and its processes at once (one process
        # group); SIGTERM and SIGHUP reach the demo alone: it passes them on as a Ctrl-C.
        in_main_thread = threading.current_thread() is threading.main_thread()
        handlers = {signum: signal.signal(signum, _raise_stopped)
                    for signum in (signal.SIGTERM, signal.SIGHUP)} if in_main_thread else {}
        if in_main_thread and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # a demo started in the background ignores SIGINT, and so would its processes
            # (an ignored signal stays ignored across exec): they must see the demo's Ctrl-C
            signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupted = False
        try:
            return self._steps()
        except KeyboardInterrupt:
            interrupted = True
            self.console.say("demo: interrupted")
            return 130
        except _Stopped as exc:
            self.console.say(f"demo: stopped by {exc}")
            return 128 + getattr(signal, str(exc)).value
        finally:
            self._stop_all(signal_them=not interrupted)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    def _stop_all(self, signal_them: bool) -> None:
        """Stop what still runs (after a failure or an interrupt): Ctrl-C unless the terminal
        already sent one to every process, then a kill for what ignores it."""
        for name, process in self.processes.items():
            if signal_them and process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.console.wait_ended(name, STOP_GRACE)  # its last lines shown

    def _start(self, name: str, command: list[str], shown: str) -> None:
        self.console.say(f"  {shown}")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, env=env)
        self.processes[name] = process
        assert process.stdout is not None  # stdout=PIPE
        self.console.follow(name, process.stdout)

    def _fail(self, why: str) -> int:
        codes = {name: self._exit_code(name) for name in self.processes}
        ended = [f"the {_TITLES[name]} exited with code {code}"
                 for name, code in codes.items() if code is not None]
        if ended:
            why += f" ({', '.join(ended)})"
        print(f"pymoult demo: {why}", file=sys.stderr, flush=True)
        return FAILED

    def _exit_code(self, name: str) -> int | None:
        """Process ``name``'s exit code if it has ended (its output has: it is exiting), else
        None."""
        process = self.processes[name]
        if name in self.console.ended:
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass  # it closed its output but goes on
        return process.poll()

    def _steps(self) -> int:
        app = self.directory / "app.py"
        say = self.console.say
        scripts = update_scripts(self.directory)
        if not scripts:  # find_example saw some: they were removed since
            return self._fail(f"{_shown(self.directory)} holds no update script (update.py, "
                              "update2.py...)")
        say("Starting the application under the Pymoult runtime:")
        self._start("app", [sys.executable, "-m", "pymoult", "run", str(app), *self.arguments],
                    " ".join(["pymoult run", _shown(app), *self.arguments]))
        listening = self.console.wait_for(lambda name, line: line.startswith(LISTENING))
        if listening is None:
            return self._fail("the runtime did not say where it listens")
        address = listening[1][len(LISTENING):].strip()
        client = self.directory / "client.py"
        if client.is_file():
            served = self.console.wait_for(lambda name, line: name == "app" and URL.search(line))
            if served is None:
                return self._fail("the application printed no URL for its client")
            found = URL.search(served[1])
            assert found is not None  # the line was waited for as one that holds a URL
            url = found.group(0)
            say("and a client of it:")
            self._start("client", [sys.executable, str(client), url],
                        f"python {_shown(client)} {url}")
        # the lines that show the example at work: its client's if it has one
        watched = "client" if "client" in self.processes else "app"

        def activity(name: str, line: str) -> bool:
            return name == watched and not line.startswith(LISTENING)

        if self.console.wait_for(activity, count=SHOWN) is None:
            return self._fail(f"the {_TITLES[watched]} did not print {SHOWN} lines")

        for script in scripts:
            say(f"\nPushing {script.name} while it runs:\n"
                f"  pymoult push {_shown(script)} --wait --to {address}")
            if not self._push(script, address):
                return self._fail(f"the update {script.name} did not apply")
            mark = len(self.console.lines)
        if self.console.wait_for(activity, count=SHOWN, since=mark) is None:
            return self._fail(f"the {_TITLES[watched]} did not print {SHOWN} lines after "
                              "the update")

        say("\nThe same process and its state, the new code. Ctrl-C, as a user ends it:")
        codes = {name: self._interrupt(name) for name in reversed(self.processes)}
        for name, code in codes.items():
            say(f"The {_TITLES[name]} " + (
                f"exited with code {code}." if code is not None else
                f"did not stop within {STOP_GRACE:g} s of Ctrl-C: killed."))
        unclean = [f"the {_TITLES[name]} " + ("did not stop on Ctrl-C" if code is None else
                                              f"exited with code {code}")
                   for name, code in codes.items() if code not in STOPPED]
        if unclean:
            print(f"pymoult demo: {'; '.join(unclean)}", file=sys.stderr, flush=True)
            return FAILED
        return 0

    def _push(self, script: pathlib.Path, address: str) -> bool:
        """Push ``script`` as a user would, show the command's output; True if it applied."""
        command = [sys.executable, "-m", "pymoult", "push", str(script), "--wait",
                   "--timeout", f"{WAIT:g}", "--to", address]
        try:
            pushed = subprocess.run(command, capture_output=True, text=True, timeout=WAIT + 10)
        except subprocess.TimeoutExpired:
            self.console.say(f"    push | no reply within {WAIT + 10:g} s")
            return False
        for line in (pushed.stdout + pushed.stderr).splitlines():
            self.console.say(f"    push | {line}")
        return pushed.returncode == 0

    def _interrupt(self, name: str) -> int | None:
        """Ctrl-C to process ``name``; its exit code once its output has all been shown, or
        None if it did not stop within ``STOP_GRACE`` seconds (then it is killed)."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            code = process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
        self.console.wait_ended(name, STOP_GRACE)
        return code
