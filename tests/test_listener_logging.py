"""What the listener logs through the ``pymoult`` logger: every refusal and every push with its
outcome, naming the peer; repeated refusals counted rather than logged one by one; and
``pymoult run`` shows them (on stderr, or in its ``--log-file``)."""

import logging
import os
import re
import socket
import threading

import pytest

from app_process import App, command_env, pymoult
from listening import (WAIT, authenticated_exchange, connect, error_type, exchange, frame,
                       header)
from pymoult import client, protocol
from pymoult.errors import AuthenticationError
from pymoult.highlevel.listener import Listener

TOKEN = "s3cret-token-of-the-logging-tests"
WRONG = "a-wrong-token-of-the-logging-tests"
TCP_PEER = r"connection \d+ from 127\.0\.0\.1:\d+"
UNIX_PEER = rf"connection \d+ from uid {os.geteuid()} pid \d+"


@pytest.fixture(autouse=True)
def no_token_in_environment(monkeypatch):
    monkeypatch.delenv("PYMOULT_TOKEN", raising=False)


class Records(logging.Handler):
    """The ``pymoult`` log's records (all levels) while in use; ``wait_for(pattern)``."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records, self.changed = [], threading.Condition()

    def emit(self, record):
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def matching(self, pattern):
        return [r for r in self.records if re.search(pattern, r.getMessage())]

    def wait_for(self, pattern):
        with self.changed:
            assert self.changed.wait_for(lambda: self.matching(pattern), WAIT), \
                [r.getMessage() for r in self.records]
            return self.matching(pattern)

    def __enter__(self):
        log = logging.getLogger("pymoult")
        self.saved = log.level
        log.setLevel(logging.DEBUG)
        log.addHandler(self)
        return self

    def __exit__(self, *exc_info):
        log = logging.getLogger("pymoult")
        log.removeHandler(self)
        log.setLevel(self.saved)


@pytest.fixture
def tcp():
    listener = Listener(address="tcp:127.0.0.1:0", token=TOKEN, failure_delay=0,
                        max_size=4096, read_timeout=2.0, max_connections=1).start()
    yield listener
    assert listener.stop(WAIT)


def hello():
    return frame(protocol.hello(os.urandom(protocol.NONCE_BYTES)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("send, message", [
    (lambda a: authenticated_exchange(a, WRONG, {"op": "status"}),
     "authentication failed: wrong token"),
    (lambda a: exchange(a, frame({"op": "hello", "version": 1, "nonce": "00" * 32})),
     r"unsupported protocol version 1"),
    (lambda a: exchange(a, header(5000) + b"x"),
     r"frame of 5000 bytes is over the limit of 1024 bytes"),
    (lambda a: authenticated_exchange(a, TOKEN, b"x" * 5000),
     r"frame of 5000 bytes is over the limit of 4096 bytes"),
    (lambda a: exchange(a, hello()[:3], close_write=False),
     r"the frame was not complete within 2\.0 s"),
    (lambda a: exchange(a, frame({"op": "status", "token": TOKEN})),
     r"this listener takes no token in a request"),
])
def test_each_refusal_is_logged_at_warning_with_the_peer(tcp, send, message):
    with Records() as log:
        reply = send(tcp.address)
        assert error_type(reply) in ("AuthenticationError", "ProtocolError")
        [record] = log.wait_for(rf"Pymoult Listener: refused {TCP_PEER}: .*{message}")
    assert record.levelno == logging.WARNING


@pytest.mark.timeout(60)
def test_a_client_that_hangs_up_after_the_challenge_is_logged_as_a_wrong_token(tcp):
    with Records() as log:
        with pytest.raises(AuthenticationError, match="did not prove it knows the token"):
            client.status(tcp.address, token=WRONG)
        [record] = log.wait_for(rf"refused {TCP_PEER}: the connection ended after the "
                                r"challenge, before any proof: a wrong token")
    assert record.levelno == logging.WARNING


@pytest.mark.timeout(60)
def test_busy_is_logged_with_the_peer(tcp, monkeypatch):
    gate = threading.Event()
    monkeypatch.setitem(__import__("sys").modules, "logging_gate", gate)
    replies = []
    holder = threading.Thread(target=lambda: replies.append(client.push(
        tcp.address, "import sys\nsys.modules['logging_gate'].wait(30)\n", token=TOKEN,
        timeout=WAIT)))
    with Records() as log:
        holder.start()
        try:
            assert tcp.wait_connections(lambda n: n == 1, WAIT)
            assert error_type(authenticated_exchange(tcp.address, TOKEN, {"op": "status"})) \
                == "ListenerBusyError"
        finally:
            gate.set()
            holder.join(WAIT)
        [record] = log.wait_for(rf"refused {TCP_PEER}: the listener is busy")
    assert record.levelno == logging.WARNING and replies[0]["ok"]


@pytest.mark.timeout(60)
def test_a_push_and_its_outcome_are_logged_with_the_peer():
    listener = Listener().start()
    try:
        with Records() as log:
            assert client.push(listener.address, "x = 1\n")["ok"]
            assert client.push(listener.address, "1 / 0\n")["ok"] is False
            asked = log.wait_for(rf"Pymoult Listener: {UNIX_PEER} asks for push")
            ran = log.wait_for(rf"update script \d+ \(pushed by {UNIX_PEER}\) ran; no update")
            raised = log.wait_for(rf"update script \d+ \(pushed by {UNIX_PEER}\) raised "
                                  r"ZeroDivisionError")
        assert [r.levelno for r in asked + ran + raised] == \
            [logging.INFO, logging.INFO, logging.INFO, logging.WARNING]
    finally:
        assert listener.stop(WAIT)


@pytest.mark.timeout(60)
def test_repeated_refusals_are_counted_not_logged_one_by_one():
    listener = Listener(token=TOKEN, failure_delay=0, log_interval=1.0).start()
    summary = r": (\d+) more refusals \(AuthenticationError/\) from uid \d+ in 1 s not logged"

    def accounted(log):  # refusals logged one by one, and those counted in summaries
        lines = log.matching(r"refused .*wrong token")
        counts = [int(re.search(summary, r.getMessage()).group(1))
                  for r in log.matching(summary)]
        return len(lines), sum(counts)

    try:
        with Records() as log:
            for _ in range(5):
                reply = authenticated_exchange(listener.address, WRONG, {"op": "status"})
                assert error_type(reply) == "AuthenticationError"
            with log.changed:
                assert log.changed.wait_for(lambda: sum(accounted(log)) == 5, WAIT), \
                    [r.getMessage() for r in log.records]
            lines, counted = accounted(log)
            assert counted >= 1 and lines < 5  # not one line each
            assert all(r.levelno == logging.WARNING for r in log.matching(summary))
    finally:
        assert listener.stop(WAIT)


@pytest.mark.timeout(60)
def test_a_unix_peer_is_named_by_uid_and_pid():
    if not hasattr(socket, "SO_PEERCRED"):
        pytest.skip("SO_PEERCRED is Linux's")
    listener = Listener().start()
    try:
        with Records() as log, connect(listener.address) as sock:
            sock.sendall(frame({"op": "nope"}))
            sock.shutdown(socket.SHUT_WR)
            log.wait_for(rf"refused {UNIX_PEER}: unknown op 'nope'")
    finally:
        assert listener.stop(WAIT)


# -- under pymoult run --------------------------------------------------------------------------

APP = "import time\nfor _ in range(600):\n    time.sleep(0.1)\n"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("to_file", [False, True])
def test_the_runtime_shows_wrong_tokens_and_a_listener_beyond_loopback(tmp_path, to_file):
    (tmp_path / "app.py").write_text(APP)
    token_file, wrong_file = tmp_path / "token", tmp_path / "wrong"
    token_file.write_text(TOKEN)
    wrong_file.write_text(WRONG)
    os.chmod(token_file, 0o600)
    os.chmod(wrong_file, 0o600)
    log_file = tmp_path / "app.log"
    options = ["--listen", "tcp:0.0.0.0:0", "--token-file", str(token_file)]
    if to_file:
        options += ["--log-file", str(log_file)]
    app = App(tmp_path / "app.py", *options)
    try:
        port = app.address.rsplit(":", 1)[1]
        pushed = pymoult("push", "-", "--to", f"tcp:127.0.0.1:{port}", "--token-file",
                         str(wrong_file), stdin="x = 1\n", env=command_env())
        assert pushed.returncode == 3
        beyond = (rf"listening on tcp:0\.0\.0\.0:{port}, beyond this machine: scripts and "
                  r"replies travel in clear text")
        refused = (r"refused connection \d+ from 127\.0\.0\.1:\d+: the connection ended after "
                   r"the challenge, before any proof: a wrong token")
        if to_file:
            app.interrupt()
            app.ended()
            text = log_file.read_text()
            assert re.search(r"WARNING \[.*\] Pymoult Listener: " + beyond, text), text
            assert re.search(r"WARNING \[.*\] Pymoult Listener: " + refused, text), text
        else:
            app.stderr.wait_for(lambda line: re.fullmatch(
                r"pymoult: warning: Pymoult Listener: " + beyond + ".*", line))
            app.stderr.wait_for(lambda line: re.fullmatch(
                r"pymoult: warning: Pymoult Listener: " + refused + ".*", line))
    finally:
        app.close()
