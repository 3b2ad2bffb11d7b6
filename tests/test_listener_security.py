"""Who may run code through the listener: file permissions, peer uid, tokens, TCP defaults.

Each refusal test pushes a script that would create a marker file and checks it is absent; a
control with the right credentials shows the same script does create it.
"""

import json
import logging
import os
import select
import socket
import stat
import warnings

import pytest

from listening import (MARKER_SCRIPT, WAIT, LogWatcher, authenticated_exchange, error_type,
                       exchange, frame)
from pymoult import client, protocol
from pymoult.errors import AuthenticationError, PymoultValueError
from pymoult.highlevel.listener import Listener

pytestmark = pytest.mark.timeout(30)
TOKEN = "s3cret-token-of-the-security-tests"
WRONG = "not-the-token-of-the-listener"
NOBODY = 65534


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    monkeypatch.delenv("PYMOULT_TOKEN", raising=False)
    monkeypatch.delenv("PYMOULT_ADDRESS", raising=False)


@pytest.fixture
def listen():
    started = []

    def start(**kwargs):
        listener = Listener(**kwargs).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        assert listener.stop(WAIT)


class Marker:
    """A file that ``script`` creates: its existence says whether pushed code ran."""

    def __init__(self, path):
        self.path = path
        self.script = MARKER_SCRIPT.format(path=str(path))

    def exists(self):
        return self.path.exists()


@pytest.fixture
def marker(tmp_path):
    return Marker(tmp_path / "code-ran")


def push_frame(script, **fields):
    return frame({"op": "push", "script": script, "wait": True, "timeout": WAIT, **fields})


# -- the Unix socket ---------------------------------------------------------------------------

def test_socket_is_owner_only_in_an_owner_only_directory(listen):
    listener = listen()
    path = listener.address[len("unix:"):]
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    directory = os.lstat(os.path.dirname(path))
    assert stat.S_IMODE(directory.st_mode) == 0o700 and directory.st_uid == os.geteuid()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_wrong_or_missing_token_cannot_run_code(transport, marker, listen):
    address = "tcp:127.0.0.1:0" if transport == "tcp" else None
    listener = listen(address=address, token=TOKEN)
    with LogWatcher() as log_records:
        for token in [None, "", "s3cret-toke", TOKEN + "x", TOKEN.upper(), 42]:
            fields = {} if token is None else {"token": token}
            reply = exchange(listener.address, push_frame(marker.script, **fields))
            assert error_type(reply) == "AuthenticationError", token
            assert not marker.exists()
        # one line per peer and kind of refusal per log_interval; the others are counted
        # (tests/test_listener_logging.py)
        assert len([m for m in log_records.messages if "authentication failed" in m]) == 1
    with pytest.raises(AuthenticationError, match=r": authentication failed: the listener did "
                                                  r"not prove it knows the token"):
        client.push(listener.address, marker.script, token=WRONG)
    reply = authenticated_exchange(listener.address, WRONG, {"op": "push",
                                                             "script": marker.script})
    assert reply == protocol.error_reply("AuthenticationError",
                                         "authentication failed: wrong token")
    with pytest.raises(AuthenticationError, match=r"this listener needs a token$"):
        client.push(listener.address, marker.script)
    assert not marker.exists()
    assert client.push(listener.address, marker.script, token=TOKEN)["ok"]  # the control
    assert marker.exists()


def test_authentication_comes_before_the_script_is_compiled(listen):
    listener = listen(token=TOKEN)
    reply = authenticated_exchange(listener.address, WRONG,
                                   {"op": "push", "script": "def broken(:"})
    assert reply == protocol.error_reply("AuthenticationError",
                                         "authentication failed: wrong token")
    reply = authenticated_exchange(listener.address, WRONG, {"op": "unknown"})
    assert error_type(reply) == "AuthenticationError"


def test_status_and_history_need_the_token_too(listen):
    listener = listen(token=TOKEN)
    for op in ("status", "history"):
        assert error_type(exchange(listener.address, frame({"op": op}))) == "AuthenticationError"
        assert authenticated_exchange(listener.address, TOKEN, {"op": op})["ok"] is True


def test_the_token_may_come_from_a_private_file_or_the_environment(tmp_path, monkeypatch, listen):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    listener = listen(token_file=str(token_file))
    assert listener.requires_token
    assert client.status(listener.address, token=TOKEN)["ok"]
    token_file.chmod(0o640)
    with pytest.raises(PymoultValueError, match=r"is accessible to group or others \(mode 0640\): "
                                                r"chmod 600 it$"):
        Listener(token_file=str(token_file))
    monkeypatch.setenv("PYMOULT_TOKEN", TOKEN)
    listener = listen()  # the environment's token applies to the Unix socket as well
    assert listener.requires_token
    assert "PYMOULT_TOKEN" not in os.environ  # read once, then out of the children's reach
    with pytest.raises(AuthenticationError):
        client.status(listener.address)


@pytest.mark.parametrize("content, mode, message", [
    ("", 0o600, r"holds no token"),
    ("  \n", 0o600, r"holds no token"),
    (None, 0o600, r"is not a regular file"),
    ("t", 0o604, r"accessible to group or others \(mode 0604\)"),
])
def test_unusable_token_files_are_refused(tmp_path, content, mode, message):
    path = tmp_path / "token"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    path.chmod(mode)
    with pytest.raises(PymoultValueError, match=message):
        Listener(token_file=str(path))
    with pytest.raises(PymoultValueError, match=r"cannot read token file .*: No such file"):
        Listener(token_file=str(tmp_path / "missing"))


# -- TCP ---------------------------------------------------------------------------------------

def test_tcp_without_a_token_is_refused_at_construction():
    with pytest.raises(PymoultValueError, match=r"^a TCP listener \(tcp:127\.0\.0\.1:0\) needs a "
                                                r"token: pass token= or token_file="):
        Listener(address="tcp:127.0.0.1:0")
    with pytest.raises(PymoultValueError, match=r"needs a token"):
        Listener(port=0)


def test_tcp_binds_loopback_unless_told_otherwise(listen):
    listener = listen(port=0, token=TOKEN)
    assert listener.address.startswith("tcp:127.0.0.1:")
    assert listener._sock.getsockname()[0] == "127.0.0.1"


def test_listening_beyond_loopback_warns(listen):
    with LogWatcher() as log_records:
        listener = listen(address="tcp:0.0.0.0:0", token=TOKEN)
    assert listener.address.startswith("tcp:0.0.0.0:")
    assert any("beyond this machine" in m and "clear text" in m for m in log_records.messages)


# -- another user ------------------------------------------------------------------------------

def as_nobody(address, data):
    """In a forked child running as uid 65534: connect to ``address``, send ``data`` and
    return what happened (``{"errno": ...}`` or ``{"reply": ...}``)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    where = protocol.parse_address(address)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # the child only uses sockets, then _exit()s
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        outcome = {"error": "child failed"}
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(WAIT)
            try:
                sock.connect(where.path)
            except OSError as exc:
                outcome = {"errno": exc.errno}
            else:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                outcome = {"reply": protocol.recv_frame(sock, protocol.MAX_FRAME, WAIT)}
        except BaseException as exc:
            outcome = {"error": repr(exc)}
        finally:
            os.write(write_end, json.dumps(outcome).encode())
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], WAIT)
        assert ready, "the child did not answer"
        data = os.read(read_end, 65536)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return json.loads(data)


def test_another_user_cannot_reach_the_socket(marker, listen):
    listener = listen()
    outcome = as_nobody(listener.address, push_frame(marker.script))
    assert outcome == {"errno": 13}  # EACCES: the 0700 directory and the 0600 socket
    assert not marker.exists()


def test_the_peer_uid_is_checked_even_when_permissions_are_opened(marker, listen):
    if not hasattr(socket, "SO_PEERCRED"):
        pytest.skip("SO_PEERCRED is Linux's")
    listener = listen()
    path = listener.address[len("unix:"):]
    os.chmod(os.path.dirname(path), 0o755)  # a mistake an operator could make
    os.chmod(path, 0o777)
    with LogWatcher() as log_records:
        outcome = as_nobody(listener.address, push_frame(marker.script))
    assert outcome == {"reply": protocol.error_reply(
        "AuthenticationError",
        f"authentication failed: peer runs as uid {NOBODY}, the listener as uid {os.geteuid()}")}
    assert not marker.exists()
    assert any(f"peer runs as uid {NOBODY}" in m for m in log_records.messages)
    assert client.push(listener.address, marker.script)["ok"]  # its own user still may
    assert marker.exists()


def test_refusals_are_logged_at_warning(listen, caplog):
    listener = listen(token=TOKEN)
    with caplog.at_level(logging.WARNING, "pymoult"):
        authenticated_exchange(listener.address, WRONG, {"op": "status"})
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith("authentication failed: wrong token")
