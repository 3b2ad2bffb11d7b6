"""A real library upgraded under a running server, as a deployer would: pyftpdlib's FTP server
runs under ``pymoult run`` from a directory pip installs into; newer releases are installed over
it with pip (1.5.8, then the patch releases 1.5.9 and 1.5.10, then the major release 2.0.0, which
drops Python 2 and three of its modules), and after each install the loaded modules whose files
changed are pushed in one ``pymoult push --module ... --wait``. Two clients request all the
while (one keeps its control connection and uploads and downloads files, one connects anew each
time): no request may fail, the state (counters, files, the logged-in session) must be kept,
and the server must serve the new release: its version, and the code the connection's handler
runs for its commands (its line in the installed file).

Not checked: the methods pyftpdlib's handlers inherit from ``ioloop.AsyncChat``. On Python 3.11
the 2.0.0 upgrade replaces that class (its new base is the vendored ``_asynchat`` that 1.5.10's
``if PY3:`` bound, since 2.0.0 imports the standard one inside a ``with`` block holding a call,
not run again), and the handler classes, updated in place, keep deriving from the old one
(logged: "subclass ... still derives from the old class").

The releases are sdists: pip builds them into wheels once per session, from the package index
(CI reaches it)."""

import ast
import concurrent.futures
import ftplib
import hashlib
import io
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from app_process import WAIT, App, command_env, pymoult

pytestmark = pytest.mark.timeout(240)

FIRST = "1.5.8"
NEWER = ["1.5.9", "1.5.10", "2.0.0"]  # patch releases, then a major one (which drops files)
#: Methods of the connection's class whose code must come from the installed release.
METHODS = ("ftp_RETR", "ftp_STOR", "ftp_NOOP", "on_incomplete_file_received")

APP = """
import os
import sys

LIBRARY, ROOT = os.environ["FTP_LIBRARY"], os.environ["FTP_ROOT"]
sys.path.insert(0, LIBRARY)

import pyftpdlib
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from pymoult.lowlevel.alterability import staticUpdatePoint

stats = {"connections": 0, "received": 0}
SITE = dict(perm=None, auth=True, arg=None, help="Syntax: SITE STATE|MODULES|CODE")


def loaded_modules():
    prefix = os.path.join(os.path.realpath(LIBRARY), "")
    return sorted(name for name, module in list(sys.modules.items())
                  if os.path.realpath(getattr(module, "__file__", None) or "").startswith(prefix))


class Handler(FTPHandler):
    proto_cmds = {**FTPHandler.proto_cmds, "SITE STATE": SITE, "SITE MODULES": SITE,
                  "SITE CODE": SITE}

    def on_connect(self):
        stats["connections"] += 1

    def on_file_received(self, file):
        stats["received"] += 1

    def ftp_SITE_STATE(self, line):
        self.respond(f"200 pyftpdlib {pyftpdlib.__ver__}; {stats['received']} received; "
                     f"{stats['connections']} connections")

    def ftp_SITE_MODULES(self, line):
        self.respond("200 " + " ".join(loaded_modules()))

    def ftp_SITE_CODE(self, line):
        # where the code this connection runs for each method comes from: file:line
        places = []
        for name in METHODS:
            code = getattr(type(self), name).__code__
            places.append(f"{name}={os.path.basename(code.co_filename)}:{code.co_firstlineno}")
        self.respond("200 " + " ".join(places))


METHODS = __METHODS__
authorizer = DummyAuthorizer()
authorizer.add_user("user", "12345", ROOT, perm="elradfmw")
Handler.authorizer = authorizer
server = FTPServer(("127.0.0.1", 0), Handler)
print(f"serving ftp://127.0.0.1:{server.address[1]}/ with pyftpdlib {pyftpdlib.__ver__}",
      flush=True)
try:
    while True:
        server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        staticUpdatePoint("between I/O loop turns")
except KeyboardInterrupt:
    pass
finally:
    server.close_all()
print(f"stopped: {stats['connections']} connections, {stats['received']} received",
      flush=True)
""".replace("__METHODS__", repr(METHODS))


def pip(*args, timeout=180):
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def wheels(tmp_path_factory):
    """A directory holding a wheel of each release (built from the sdists on the package
    index, in parallel) and of what they need on this Python (2.0 needs pyasyncore on 3.12+)."""
    directory = tmp_path_factory.mktemp("pyftpdlib-wheels")
    with concurrent.futures.ThreadPoolExecutor(len(NEWER) + 1) as pool:
        builds = [pool.submit(pip, "wheel", "-q", f"pyftpdlib=={version}", "-w",
                              str(directory / version)) for version in [FIRST, *NEWER]]
        for build in builds:
            build.result()
    for built in directory.glob("*/*.whl"):  # one directory for --find-links
        built.rename(directory / built.name)
    return directory


def install(wheels, library, version):
    """What ``pip install --target LIBRARY --upgrade pyftpdlib==VERSION`` does: the package's
    directory replaced by the new release's (files it no longer has are gone)."""
    pip("install", "-q", "--isolated", "--no-index", "--find-links", str(wheels), "--target",
        str(library), "--upgrade", f"pyftpdlib=={version}", timeout=60)


def sources(library):
    """Module name -> digest of its source, for every module under ``library``."""
    found = {}
    for path in pathlib.Path(library).rglob("*.py"):
        parts = path.relative_to(library).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def expected_lines(library):
    """Where METHODS start in the installed handlers.py (class FTPHandler): name -> line."""
    path = pathlib.Path(library, "pyftpdlib", "handlers.py")
    tree = ast.parse(path.read_text())
    handler = next(node for node in tree.body
                   if isinstance(node, ast.ClassDef) and node.name == "FTPHandler")
    return {node.name: min([node.lineno] + [d.lineno for d in node.decorator_list])
            for node in handler.body
            if isinstance(node, ast.FunctionDef) and node.name in METHODS}


class Client(threading.Thread):
    """Repeats ``exchange()`` until stopped; counts successes, keeps the first error (and
    stops there). ``wait_for(n)`` returns once ``n`` exchanges have succeeded."""

    def __init__(self, name, exchange):
        super().__init__(name=name, daemon=True)
        self.exchange = exchange
        self.done, self.errors = 0, []
        self.stopping = threading.Event()
        self.changed = threading.Condition()

    def run(self):
        while not self.stopping.is_set():
            try:
                self.exchange(self.done)
            except Exception as exc:  # a failed request: the test fails with it
                with self.changed:
                    self.errors.append(exc)
                    self.changed.notify_all()
                return
            with self.changed:
                self.done += 1
                self.changed.notify_all()

    def wait_for(self, count):
        with self.changed:
            reached = self.changed.wait_for(lambda: self.done >= count or self.errors, WAIT)
        assert reached and not self.errors, (self.name, self.done, self.errors)

    def finish(self):
        self.stopping.set()
        self.join(WAIT)
        assert not self.is_alive() and not self.errors, (self.name, self.errors)
        return self.done


def connect(port):
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=WAIT)
    ftp.login("user", "12345")
    return ftp


def test_releases_installed_over_the_running_library(wheels, tmp_path, request):
    library, root = tmp_path / "site-packages", tmp_path / "served"
    root.mkdir()
    install(wheels, library, FIRST)
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    app = App(tmp_path / "app.py", env=command_env(FTP_LIBRARY=str(library), FTP_ROOT=str(root)))
    request.addfinalizer(app.close)
    line = app.stdout.wait_for(lambda line: line.startswith("serving ftp://"))[0]
    assert line.endswith(f"with pyftpdlib {FIRST}")
    port = int(re.search(r":(\d+)/", line).group(1))

    session = connect(port)  # one control connection, kept through every upgrade
    request.addfinalizer(session.close)
    lock = threading.Lock()  # the session's commands: the transfer loop's, or the test's

    def transfer(index):  # upload a file, download it back, compare
        data = os.urandom(4096 + index % 512)
        with lock:
            session.storbinary(f"STOR file{index % 64}.bin", io.BytesIO(data))
            back = io.BytesIO()
            session.retrbinary(f"RETR file{index % 64}.bin", back.write)
        assert back.getvalue() == data, f"file{index % 64}.bin came back different"

    def visit(_):  # a new connection each time: accepted, logged in, served, closed
        ftp = connect(port)
        try:
            assert ftp.sendcmd("NOOP").startswith("200")
        finally:
            ftp.quit()

    def ask(command):
        with lock:
            return session.sendcmd(command)

    transfers, visits = Client("transfers", transfer), Client("visits", visit)
    for client in (transfers, visits):
        client.start()
        client.wait_for(10)
    started = time.monotonic()
    for version in NEWER:
        before = sources(library)
        install(wheels, library, version)
        after = sources(library)
        changed = sorted(name for name in before if name in after and before[name] != after[name])
        loaded = ask("SITE MODULES")[4:].split()
        pushed = [name for name in changed if name in loaded]
        assert "pyftpdlib.handlers" in pushed and "pyftpdlib" in pushed, (changed, loaded)
        counts = transfers.done, visits.done
        arguments = [argument for name in pushed for argument in ("--module", name)]
        result = pymoult("push", *arguments, "--wait", "--timeout", "30", "--to", app.address,
                         timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "': applied" in result.stdout and result.stdout.splitlines()[-1] == "ok", \
            result.stdout
        # requests go on, served by the new release, over the same session
        transfers.wait_for(counts[0] + 10)
        visits.wait_for(counts[1] + 10)
        state = ask("SITE STATE")
        assert state.startswith(f"200 pyftpdlib {version}; "), state
        places = dict(item.split("=") for item in ask("SITE CODE")[4:].split())
        lines = expected_lines(library)
        assert places == {name: f"handlers.py:{lines[name]}" for name in METHODS}, version
        fresh = connect(port)
        assert fresh.sendcmd("SITE STATE").startswith(f"200 pyftpdlib {version}; ")
        fresh.quit()
        removed = sorted(set(before) - set(after))  # stay loaded, unused by the new release
        request.node.user_properties.append((version, {"pushed": pushed, "removed": removed}))
    elapsed = time.monotonic() - started
    transferred, visited = transfers.finish(), visits.finish()

    # state kept: every upload counted since the start, every connection too
    received, connections = map(int, re.search(r"; (\d+) received; (\d+) connections",
                                               ask("SITE STATE")).groups())
    assert received == transferred
    assert connections == 1 + visited + len(NEWER)  # the session, visits, fresh connections
    assert sorted(os.listdir(root)) == sorted(f"file{i}.bin" for i in range(min(64, received)))
    session.quit()
    app.interrupt()
    assert app.wait() == 0
    request.node.user_properties.append(
        ("figures", {"transfers": transferred, "visits": visited, "seconds": round(elapsed, 1)}))
    sys.stderr.write(f"\n{transferred} transfers and {visited} connections during "
                     f"{len(NEWER)} upgrades in {elapsed:.1f} s, none failed\n")

