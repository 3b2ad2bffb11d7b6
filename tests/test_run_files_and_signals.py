"""``pymoult run``'s files: the address file is written without following a symlink planted where
it goes, and SIGTERM, SIGHUP and SIGINT remove the listener's socket and its private directory as
a normal exit does."""

import os
import signal

import pytest

from app_process import App, pymoult
from pymoult.cli import write_address_file
from pymoult.errors import PymoultValueError

pytestmark = pytest.mark.timeout(60)

#: An application that says it runs, then waits to be stopped (the pace of its loop is no
#: synchronisation: the test waits for its line).
WAITING = """import time
print("running", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def app_path(tmp_path):
    path = tmp_path / "app.py"
    path.write_text(WAITING)
    return path


@pytest.fixture
def started():
    apps = []

    def start(*args, **kwargs):
        app = App(*args, **kwargs)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.close()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, -signal.SIGTERM),
                                          (signal.SIGHUP, -signal.SIGHUP),
                                          (signal.SIGINT, 130)])
def test_a_signal_removes_the_socket_and_its_directory(app_path, started, signum, code):
    app = started(app_path)
    assert app.stdout.wait_for(lambda line: line == "running")
    socket_path = app.address[len("unix:"):]
    assert os.path.exists(socket_path)
    app.process.send_signal(signum)
    assert app.ended() == code
    assert not os.path.exists(socket_path)
    assert not os.path.exists(os.path.dirname(socket_path))
    if signum != signal.SIGINT:
        assert f"pymoult: warning: {signal.Signals(signum).name}: stopping the runtime" in \
            app.stderr.text()


def test_sigterm_removes_a_socket_at_a_chosen_path(app_path, started, tmp_path):
    path = tmp_path / "app.sock"
    app = started(app_path, "--listen", f"unix:{path}")
    assert app.stdout.wait_for(lambda line: line == "running")
    assert path.exists()
    app.process.send_signal(signal.SIGTERM)
    assert app.ended() == -signal.SIGTERM
    assert not path.exists() and tmp_path.is_dir()  # the directory was not the listener's


def test_the_address_file_does_not_follow_a_planted_symlink(app_path, started, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    address_file = tmp_path / "address"
    address_file.symlink_to(victim)
    old_tmp = tmp_path / "address.tmp"  # the name it used to write through first
    old_tmp.symlink_to(victim)
    app = started(app_path, "--address-file", str(address_file))
    assert app.stdout.wait_for(lambda line: line == "running")
    assert victim.read_text() == "precious\n"
    assert not address_file.is_symlink()
    assert address_file.read_text() == app.address + "\n"
    assert old_tmp.is_symlink()  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["address", "address.tmp", "app.py",
                                                         "victim"]  # no temporary file left
    app.process.send_signal(signal.SIGTERM)
    assert app.ended() == -signal.SIGTERM


def test_the_temporary_name_is_never_a_planted_file(tmp_path, monkeypatch):
    planted = tmp_path / ".address.0000000000000000.tmp"
    planted.symlink_to(tmp_path / "victim")
    monkeypatch.setattr("secrets.token_hex", lambda n: "0" * (2 * n))
    with pytest.raises(PymoultValueError, match=r"^cannot write the address file .*/address: "
                                                r"File exists$"):
        write_address_file(str(tmp_path / "address"), "unix:/x")
    assert not (tmp_path / "victim").exists() and not (tmp_path / "address").exists()


def test_an_address_file_that_cannot_be_written_is_one_sentence(app_path, tmp_path):
    ran = pymoult("run", "--address-file", str(tmp_path / "missing" / "address"),
                  str(app_path))
    assert ran.returncode == 1 and "running" not in ran.stdout
    assert ran.stderr.splitlines() == [line for line in ran.stderr.splitlines()
                                       if not line.startswith("Traceback")]
    assert any(line.startswith("pymoult run: cannot write the address file ")
               and line.endswith("No such file or directory")
               for line in ran.stderr.splitlines())
