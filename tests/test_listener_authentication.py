"""Protocol 2: the client and the listener each prove they know the token, the listener first,
and the token never crosses the wire.

An impostor on the listener's port (a process of another user, say, that took a TCP port the
client was pointed at) gets the client's hello and nothing more: no token, no script; the push
fails with one sentence. Frames recorded from a real session and replayed are refused (both
sides' nonces are fresh), a request or reply changed on the way is refused, and over a Unix
socket a listener running as another user is not even sent the hello.
"""

import json
import os
import socket
import threading
import warnings

import pytest

from app_process import command_env, pymoult
from listening import (MARKER_SCRIPT, WAIT, authenticated_exchange, connect, error_type,
                       exchange, frame)
from pymoult import client, protocol
from pymoult.errors import AuthenticationError, ListenerError
from pymoult.highlevel.listener import Listener

pytestmark = pytest.mark.timeout(60)
TOKEN = "the-token-of-the-authentication-tests"
NOBODY = 65534


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    monkeypatch.delenv("PYMOULT_TOKEN", raising=False)
    monkeypatch.delenv("PYMOULT_ADDRESS", raising=False)


@pytest.fixture
def listener():
    listener = Listener(address="tcp:127.0.0.1:0", token=TOKEN).start()
    yield listener
    assert listener.stop(WAIT)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code-ran"
    return path, MARKER_SCRIPT.format(path=str(path))


def frames_in(data):
    """The JSON objects of the whole frames in ``data`` (bytes)."""
    found, data = [], bytes(data)
    while len(data) >= 4:
        size = int.from_bytes(data[:4], "big")
        if len(data) < 4 + size:
            break
        found.append(json.loads(data[4:4 + size]))
        data = data[4 + size:]
    return found


class Server:
    """A TCP server on a free loopback port that serves one connection with ``behave(conn,
    record)``, then records whatever else the client sends until it closes. ``received``
    (bytes) once ``done`` is set."""

    def __init__(self, behave):
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(WAIT)
        self.address = f"tcp:127.0.0.1:{self._sock.getsockname()[1]}"
        self.received = bytearray()
        self.done = threading.Event()
        self._behave = behave
        threading.Thread(target=self._run, daemon=True, name="impostor").start()

    def _run(self):
        try:
            conn, _ = self._sock.accept()
            with conn:
                conn.settimeout(WAIT)
                self._behave(conn, self)
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    self.received += chunk
        except OSError:
            pass
        finally:
            self._sock.close()
            self.done.set()

    def read_frame(self, conn):
        payload = protocol.recv_payload(conn, protocol.MAX_FRAME, WAIT)
        self.received += len(payload).to_bytes(4, "big") + payload
        return json.loads(payload)

    def frames(self):
        assert self.done.wait(WAIT), "the client never closed the connection"
        return frames_in(self.received)


def protocol_1(conn, server):
    """What the issue's impostor did: read the request, say it went well."""
    server.read_frame(conn)
    conn.sendall(frame({"ok": True, "script_error": None, "updates": []}))


def fake_challenge(conn, server):
    """A challenge with a proof made up (it does not know the token)."""
    server.read_frame(conn)
    conn.sendall(frame({"ok": True, "version": protocol.PROTOCOL_VERSION,
                        "nonce": os.urandom(32).hex(), "proof": os.urandom(32).hex()}))


def claims_no_token(conn, server):
    server.read_frame(conn)
    conn.sendall(frame(protocol.challenge(None)))


def says_nothing(conn, server):
    server.read_frame(conn)
    conn.shutdown(socket.SHUT_WR)


IMPOSTORS = {
    protocol_1: (AuthenticationError, r"did not answer the handshake of protocol 2: it is not a "
                                      r"Pymoult listener of this version, and nothing was sent"),
    fake_challenge: (AuthenticationError, r"authentication failed: the listener did not prove it "
                                          r"knows the token \(the token is wrong, or this is not "
                                          r"the application's listener\), and nothing was sent"),
    claims_no_token: (AuthenticationError, r"claims to need no token, which a TCP listener never "
                                           r"does: it may be an impostor"),
    says_nothing: (ListenerError, r"closed the connection without a reply|no valid reply"),
}


@pytest.mark.parametrize("behave", list(IMPOSTORS), ids=lambda f: f.__name__)
def test_an_impostor_gets_neither_the_token_nor_the_script(behave, marker):
    impostor = Server(behave)
    error, message = IMPOSTORS[behave]
    with pytest.raises(error, match=message) as caught:
        client.push(impostor.address, marker[1], token=TOKEN, timeout=WAIT)
    assert caught.value.address == impostor.address
    [hello] = impostor.frames()  # the hello, and nothing else
    assert hello["op"] == "hello" and hello["version"] == 2 and len(hello["nonce"]) == 64
    assert TOKEN.encode() not in impostor.received and b"code-ran" not in impostor.received


def test_pymoult_push_to_an_impostor_fails_with_one_sentence(tmp_path, marker):
    impostor = Server(protocol_1)
    script = tmp_path / "update.py"
    script.write_text(marker[1])
    pushed = pymoult("push", str(script), "--wait", "--to", impostor.address,
                     env=command_env(PYMOULT_TOKEN=TOKEN))
    assert pushed.returncode == 3, pushed
    assert pushed.stdout == ""  # no "ok"
    [line] = pushed.stderr.splitlines()
    assert line.startswith(f"pymoult push: the listener at {impostor.address} did not answer")
    assert line.endswith("and nothing was sent to it")
    assert [f["op"] for f in impostor.frames()] == ["hello"]
    assert TOKEN.encode() not in impostor.received


class Relay:
    """Forwards one connection to ``upstream`` frame by frame, recording what each side sent:
    the client's hello, the listener's challenge, the client's proof and request, the
    listener's reply (and its MAC). ``change(side, index, payload)`` may alter a frame."""

    ROUNDS = (("client", 1), ("server", 1), ("client", 2), ("server", 2))

    def __init__(self, upstream, change=None):
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(WAIT)
        self.address = f"tcp:127.0.0.1:{self._sock.getsockname()[1]}"
        self.upstream, self.change = upstream, change
        self.sent = {"client": [], "server": []}  # raw payloads, as each side sent them
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="relay").start()

    def _run(self):
        try:
            conn, _ = self._sock.accept()
            with conn, connect(self.upstream) as up:
                conn.settimeout(WAIT)
                ends = {"client": (conn, up), "server": (up, conn)}
                for side, count in self.ROUNDS:
                    source, target = ends[side]
                    for _ in range(count):
                        payload = protocol.recv_payload(source, protocol.MAX_FRAME, WAIT)
                        index = len(self.sent[side])
                        self.sent[side].append(payload)
                        if self.change is not None:
                            payload = self.change(side, index, payload)
                        target.sendall(len(payload).to_bytes(4, "big") + payload)
        except (OSError, protocol.ProtocolError):
            pass  # a side ended the exchange early (a refusal has no MAC frame)
        finally:
            self._sock.close()
            self.done.set()

    def recorded(self):
        assert self.done.wait(WAIT)
        return self.sent


def test_the_token_never_crosses_the_wire(listener, marker):
    relay = Relay(listener.address)
    reply = client.push(relay.address, marker[1], token=TOKEN, timeout=WAIT)
    assert reply["ok"] is True and marker[0].exists()
    sent = relay.recorded()
    assert [json.loads(p).get("op") for p in sent["client"]] == ["hello", None, "push"]
    assert "proof" in json.loads(sent["client"][1])
    everything = b"".join(sent["client"] + sent["server"])
    assert TOKEN.encode() not in everything
    challenge, reply, mac = (json.loads(p) for p in sent["server"])
    assert challenge["proof"] and reply["ok"] is True and len(mac["mac"]) == 64


def test_replayed_client_frames_are_refused(listener, marker):
    path, script = marker
    relay = Relay(listener.address)
    client.push(relay.address, script, token=TOKEN, timeout=WAIT)
    hello, proof, request = relay.recorded()["client"]
    path.unlink()
    for replayed_hello in (hello, frame(protocol.hello(os.urandom(32)))[4:]):
        with connect(listener.address) as sock:  # the same frames, on a new connection
            sock.sendall(len(replayed_hello).to_bytes(4, "big") + replayed_hello)
            challenge = protocol.recv_frame(sock, protocol.AUTH_FRAME_MAX, WAIT)
            assert challenge["nonce"] != json.loads(relay.sent["server"][0])["nonce"]
            for payload in (proof, request):
                sock.sendall(len(payload).to_bytes(4, "big") + payload)
            reply = protocol.recv_frame(sock, protocol.MAX_FRAME, WAIT)
        assert reply == protocol.error_reply("AuthenticationError",
                                             "authentication failed: wrong token")
    assert not path.exists()


def test_a_replayed_challenge_does_not_fool_the_client(listener, marker):
    relay = Relay(listener.address)
    client.status(relay.address, token=TOKEN)
    [recorded_challenge, *_] = relay.recorded()["server"]

    def replay(conn, server):
        server.read_frame(conn)
        conn.sendall(len(recorded_challenge).to_bytes(4, "big") + recorded_challenge)

    impostor = Server(replay)
    with pytest.raises(AuthenticationError, match=r"did not prove it knows the token"):
        client.push(impostor.address, marker[1], token=TOKEN, timeout=WAIT)
    assert [f["op"] for f in impostor.frames()] == ["hello"]


def test_a_request_changed_on_the_way_is_refused(listener, marker):
    path, script = marker
    evil = MARKER_SCRIPT.format(path=str(path) + "-evil")

    def swap_script(side, index, payload):
        if side == "client" and index == 2:
            return json.dumps({"op": "push", "script": evil}).encode()
        return payload

    relay = Relay(listener.address, swap_script)
    with pytest.raises(AuthenticationError, match=r"authentication failed: the request does not "
                                                  r"match the MAC sent with the proof"):
        client.push(relay.address, "pass\n", token=TOKEN, timeout=WAIT)
    assert not os.path.exists(str(path) + "-evil")
    reply = authenticated_exchange(listener.address, TOKEN, {"op": "push", "script": script},
                                   mac_of=b"another request")
    assert error_type(reply) == "AuthenticationError" and not path.exists()


def test_a_reply_changed_on_the_way_is_not_believed(listener):
    def forge(side, index, payload):
        if side == "server" and index == 1:
            reply = json.loads(payload)
            reply["listener"]["applied_updates"] = ["forged"]
            return json.dumps(reply).encode()
        return payload

    relay = Relay(listener.address, forge)
    with pytest.raises(ListenerError, match=r"does not carry the listener's MAC: it may come "
                                            r"from an impostor"):
        client.status(relay.address, token=TOKEN)


def test_protocol_1_requests_and_other_versions_are_refused(listener):
    reply = exchange(listener.address, frame({"op": "status", "token": TOKEN}))
    assert reply["error"]["message"].startswith("authentication failed: this listener takes no "
                                                "token in a request")
    reply = exchange(listener.address, frame({"op": "hello", "version": 1,
                                              "nonce": os.urandom(32).hex()}))
    assert reply == protocol.error_reply(
        "ProtocolError", "unsupported protocol version 1 (this listener speaks 2)")
    assert client.status(listener.address, token=TOKEN)["ok"] is True


def test_a_listener_without_a_token_needs_one_from_nobody_on_its_unix_socket():
    with Listener() as listener:
        assert client.status(listener.address)["ok"] is True  # hello, then the request
        assert client.status(listener.address, token=TOKEN)["ok"] is True  # same user: no proof
        assert exchange(listener.address, frame({"op": "status"}))["ok"] is True  # protocol 1


def test_a_client_without_the_token_is_told_the_listener_needs_one(listener):
    with pytest.raises(AuthenticationError, match=r": authentication failed: this listener needs "
                                                  r"a token$"):
        client.status(listener.address)


def test_a_unix_listener_of_another_user_is_sent_nothing(tmp_path, marker):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a listener as another user")
    path = str(tmp_path / "impostor.sock")
    read_end, write_end = os.pipe()
    ready_r, ready_w = os.pipe()
    with warnings.catch_warnings():  # the child only uses sockets, then _exit()s
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: bound as root, listening as nobody
        received = b""
        try:
            os.close(read_end)
            os.close(ready_r)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock.listen(1)  # the peer credentials a client reads are taken here
            os.write(ready_w, b"x")
            sock.settimeout(WAIT)
            conn, _ = sock.accept()
            conn.settimeout(WAIT)
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
        except BaseException:
            received = b"child failed"
        finally:
            os.write(write_end, b"received:" + received)
            os._exit(0)
    os.close(write_end)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"x"
        with pytest.raises(AuthenticationError, match=rf"runs as uid {NOBODY}, neither yours "
                                                      rf"\(0\) nor root's: it may be an impostor"):
            client.push(f"unix:{path}", marker[1], token=TOKEN, timeout=WAIT)
        received = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            received += chunk
    finally:
        os.close(read_end)
        os.close(ready_r)
        os.waitpid(pid, 0)
    assert received == b"received:"  # not even the hello


def test_a_pipe_of_another_user_is_written_nothing(tmp_path, marker):
    """A named pipe still carries the token (it has no way back for a challenge): the client
    writes only into a pipe of its own user or root's."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the pipe to another user")
    path = tmp_path / "pipe"
    os.mkfifo(path, 0o600)
    os.chown(path, NOBODY, NOBODY)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # somebody reads it
    try:
        with pytest.raises(AuthenticationError, match=rf"the pipe {path} belongs to uid "
                                                      rf"{NOBODY}, neither you \(0\) nor root"):
            client.push(f"pipe:{path}", marker[1], wait=False, token=TOKEN)
        assert os.read(reader, 65536) == b""  # no writer left, and nothing was written
    finally:
        os.close(reader)
