"""Hostile input: random, truncated, oversized and ill-typed frames (as the first frame, the
hello, the proof, or the request once authenticated), wrong proofs, slow clients and more
connections than the cap. Every one gets an error reply, no code runs, the listener keeps
serving, and afterwards a legitimate update still applies to the untouched application."""

import json
import math
import os
import random
import select
import socket
import sys
import threading
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listening import (MARKER_SCRIPT, WAIT, App, authenticated_exchange, connect, error_type,
                       exchange, frame, header, read_reply, update_script)
from pymoult import client, protocol
from pymoult.errors import ListenerBusyError
from pymoult.highlevel.listener import Listener
from pymoult.highlevel.managers import ThreadedManager
from pymoult.lowlevel.alterability import resumeSuspendedThreads

pytestmark = pytest.mark.timeout(60)
TOKEN = "fuzz-token-of-the-listener"
MAX_SIZE = 4096
READ_TIMEOUT = 0.2
REFUSALS = {"ProtocolError", "AuthenticationError"}


def fuzz(examples):
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One application (a DSU_Thread greeting in a loop), its manager, and a listener with a
    token and small limits, shared by the module's tests. Its read timeout is generous: a
    frame sent whole must never be cut off because a loaded machine was slow to read it
    (``impatient`` is the listener for slow clients)."""
    stop = threading.Event()
    app = App(stop)
    app.thread.start()
    assert app.wait_for(lambda a: a.count >= 1)
    manager = ThreadedManager("fuzzed application").start()
    # hundreds of refusals from one peer: no growing delay before each (failure_delay=0;
    # tests/test_listener_starvation.py tests the delay)
    listener = Listener(token=TOKEN, manager=manager, max_size=MAX_SIZE,
                        read_timeout=WAIT, failure_delay=0).start()
    marker = tmp_path_factory.mktemp("fuzz") / "code-ran"
    world = types.SimpleNamespace(app=app, manager=manager, listener=listener,
                                  address=listener.address, marker=marker,
                                  script=MARKER_SCRIPT.format(path=str(marker)),
                                  thread=app.thread, count=app.count)
    yield world
    stop.set()
    resumeSuspendedThreads()
    app.thread.join(WAIT)
    assert listener.stop(WAIT) and manager.stop(WAIT) and not app.thread.is_alive()
    app.close()


@pytest.fixture(scope="module")
def impatient(world):
    """A listener with a short read timeout, for the slow clients."""
    listener = Listener(token=TOKEN, max_size=MAX_SIZE, read_timeout=READ_TIMEOUT,
                        failure_delay=0).start()
    yield listener
    assert listener.stop(WAIT)


def refused(world, reply):
    """The reply is a refusal, no code ran and the listener still serves."""
    assert error_type(reply) in REFUSALS, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    assert not world.marker.exists()
    assert world.listener.is_alive()
    return reply["error"]


@fuzz(150)
@given(data=st.binary(max_size=600))
def test_random_bytes(world, data):
    refused(world, exchange(world.address, data))


def hello():
    return frame(protocol.hello(os.urandom(protocol.NONCE_BYTES)))


def after_challenge(world, data, close_write=True):
    """Send a hello, read the challenge, then send raw ``data``: the reply."""
    with connect(world.address) as sock:
        sock.sendall(hello())
        challenge = protocol.recv_frame(sock, protocol.AUTH_FRAME_MAX, WAIT)
        assert challenge["ok"] is True and challenge["proof"]
        try:
            sock.sendall(data)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return read_reply(sock)


@fuzz(100)
@given(data=st.data())
def test_truncated_frames_never_run(world, data):
    full = hello()
    cut = data.draw(st.integers(0, len(full) - 1))
    error = refused(world, exchange(world.address, full[:cut]))
    assert error["message"].startswith("the connection ended")


@fuzz(60)
@given(data=st.data())
def test_truncated_proofs_and_requests_never_run(world, data):
    """After the challenge, the proof and the request cut anywhere (the MACs being right)."""
    with connect(world.address) as sock:
        nonce = os.urandom(protocol.NONCE_BYTES)
        sock.sendall(frame(protocol.hello(nonce)))
        challenge = protocol.recv_frame(sock, protocol.AUTH_FRAME_MAX, WAIT)
        session = protocol.Session(TOKEN, nonce, bytes.fromhex(challenge["nonce"]))
        request = frame({"op": "push", "script": world.script})
        full = frame({"proof": session.client_proof(),
                      "request_mac": session.request_mac(request[4:])}) + request
        sock.sendall(full[:data.draw(st.integers(0, len(full) - 1))])
        sock.shutdown(socket.SHUT_WR)
        error = refused(world, read_reply(sock))
    assert error["message"].startswith("the connection ended")


@fuzz(100)
@given(size=st.integers(protocol.AUTH_FRAME_MAX + 1, 2 ** 32 - 1), tail=st.binary(max_size=64),
       step=st.sampled_from(["first frame", "proof"]))
def test_oversized_length_prefixes_before_authentication(world, size, tail, step):
    """Before the client proved the token, a frame may not exceed AUTH_FRAME_MAX bytes: a
    stranger cannot make the listener read (or parse) a megabyte."""
    data = header(size) + tail
    reply = exchange(world.address, data) if step == "first frame" else \
        after_challenge(world, data)
    error = refused(world, reply)
    assert error["message"] == (f"frame of {size} bytes is over the limit of "
                                f"{protocol.AUTH_FRAME_MAX} bytes")


@fuzz(40)
@given(size=st.integers(MAX_SIZE + 1, 2 ** 32 - 1))
def test_oversized_requests_once_authenticated(world, size):
    with connect(world.address) as sock:
        nonce = os.urandom(protocol.NONCE_BYTES)
        sock.sendall(frame(protocol.hello(nonce)))
        challenge = protocol.recv_frame(sock, protocol.AUTH_FRAME_MAX, WAIT)
        session = protocol.Session(TOKEN, nonce, bytes.fromhex(challenge["nonce"]))
        sock.sendall(frame({"proof": session.client_proof(), "request_mac": "0" * 64})
                     + header(size))
        error = refused(world, read_reply(sock))
    assert error["message"] == f"frame of {size} bytes is over the limit of {MAX_SIZE} bytes"


HELLO_FIELDS = st.dictionaries(st.sampled_from(["op", "version", "nonce", "token"]),
                               st.none() | st.booleans() | st.integers() | st.text(max_size=70),
                               max_size=4)


@fuzz(150)
@given(fields=HELLO_FIELDS, hello_op=st.booleans())
def test_ill_formed_hellos(world, fields, hello_op):
    message = dict(fields, op="hello") if hello_op else fields
    error = refused(world, exchange(world.address, frame(message)))
    if message.get("op") == "hello":
        assert error["message"].startswith(("unsupported protocol version",
                                            "the hello's nonce must be"))
    else:
        assert error["message"].startswith("authentication failed")


@fuzz(150)
@given(proof=st.none() | st.booleans() | st.integers() | st.text(max_size=70)
       | st.binary(min_size=32, max_size=32).map(lambda b: b.hex()),
       extra=st.booleans())
def test_wrong_proofs(world, proof, extra):
    fields = {"proof": proof, "request_mac": "0" * 64}
    if extra:
        fields["token"] = TOKEN  # the token itself is no proof
    error = refused(world, after_challenge(world, frame(fields)))
    assert error["message"] == "authentication failed: wrong token"


def _invalid_utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers()
                    | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)
NOT_A_BOOL = JSON.filter(lambda v: not isinstance(v, bool))
BAD_TIMEOUT = (st.floats(max_value=-1e-9) | st.just(math.inf) | st.booleans()
               | st.text(max_size=5) | st.lists(st.integers(), max_size=2))


@st.composite
def ill_typed_requests(draw):
    """Requests carrying the right token (and a script that would leave a marker) but a field
    that is wrong: validation must refuse them before anything runs."""
    script = draw(st.sampled_from(["{script}", None]))
    request = {"op": "push", "token": TOKEN, "script": script, "wait": True, "timeout": 1.0}
    field = draw(st.sampled_from(["op", "script", "wait", "timeout"]))
    if field == "op":
        request["op"] = draw(JSON.filter(lambda v: v not in ("push", "status", "history")))
    elif field == "script":
        request["script"] = draw(JSON.filter(lambda v: not isinstance(v, str)))
    elif field == "wait":
        request["wait"] = draw(NOT_A_BOOL)
    else:
        request["timeout"] = draw(BAD_TIMEOUT)
    return request


PAYLOADS = st.one_of(
    st.binary(max_size=200).filter(_invalid_utf8),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    JSON.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 3000),  # nested deeper than the parser's recursion limit
    st.just(b'{"op": "push", "n": ' + b"9" * 5000 + b"}"),  # int() of many digits
    ill_typed_requests().map(lambda r: json.dumps(r).encode()),
)


@fuzz(200)
@given(payload=PAYLOADS, authenticated=st.booleans())
def test_non_json_and_wrong_types(world, payload, authenticated):
    """As the first frame, or as the request of a client that proved the token (with the
    right MAC): validation refuses it either way."""
    payload = payload.replace(b"{script}", json.dumps(world.script)[1:-1].encode())
    if authenticated:
        reply = authenticated_exchange(world.address, TOKEN, payload)
    else:
        reply = exchange(world.address, header(len(payload)) + payload)
    refused(world, reply)


@fuzz(150)
@given(token=st.one_of(st.text(max_size=40), st.binary(max_size=20).map(lambda b: b.hex()),
                       st.just(TOKEN[:-1]), st.just(TOKEN + "\0"), st.just("\ud800"),
                       st.just(TOKEN), NOT_A_BOOL, st.booleans()),
       op=st.sampled_from(["push", "status", "history", "other"]))
def test_tokens_in_requests_are_refused(world, token, op):
    """Protocol 1's token field, right or wrong: never a way in."""
    request = {"op": op, "script": world.script, "token": token}
    error = refused(world, exchange(world.address, frame(request)))
    assert error["message"].startswith("authentication failed")


@fuzz(100)
@given(token=st.text(min_size=1, max_size=40).filter(lambda t: t.strip() != TOKEN),
       op=st.sampled_from(["push", "status", "history", "other"]))
def test_wrong_tokens(world, token, op):
    reply = authenticated_exchange(world.address, token, {"op": op, "script": world.script})
    error = refused(world, reply)
    assert error["message"] == "authentication failed: wrong token"


@fuzz(6)
@given(data=st.data())
def test_slow_clients_are_cut_off(world, impatient, data):
    full = hello()
    sent = data.draw(st.integers(0, len(full) - 1))
    dribble = data.draw(st.booleans())
    with connect(impatient.address) as sock:
        sock.sendall(full[:sent])
        if dribble:  # a byte at a time, never finishing: the whole-frame timeout applies
            rest = iter(full[sent:len(full) - 1])
            while not select.select([sock], [], [], READ_TIMEOUT / 4)[0]:
                byte = next(rest, None)
                if byte is not None:
                    sock.send(bytes([byte]))
        error = refused(world, read_reply(sock))
    assert impatient.is_alive()
    assert error["message"] in (f"the frame was not complete within {READ_TIMEOUT} s",
                                f"no data for {READ_TIMEOUT} s in the middle of a frame")


def test_a_client_silent_after_the_challenge_is_cut_off(world, impatient):
    """The whole authentication (hello, challenge, proof) has one short deadline."""
    with connect(impatient.address) as sock:
        sock.sendall(hello())
        assert protocol.recv_frame(sock, protocol.AUTH_FRAME_MAX, WAIT)["proof"]
        error = refused(world, read_reply(sock))  # says nothing more: the listener gives up
    assert error["message"] == f"the authentication was not complete within {READ_TIMEOUT} s"
    assert impatient.is_alive()


GATE_SCRIPT = "import sys\nsys.modules['fuzz_gate'].wait(30)\n"


def test_more_connections_than_the_cap_are_told_busy(world, monkeypatch):
    """``max_connections`` counts the requests being served; connections that have not sent
    theirs (silent here) hold none of its slots."""
    gate = threading.Event()
    monkeypatch.setitem(sys.modules, "fuzz_gate", gate)
    listener = Listener(token=TOKEN, max_connections=3, read_timeout=WAIT).start()
    silent = [connect(listener.address) for _ in range(5)]
    replies = []
    pushes = [threading.Thread(target=lambda: replies.append(client.push(
        listener.address, GATE_SCRIPT, token=TOKEN, timeout=WAIT))) for _ in range(3)]
    try:
        assert listener.wait_pending(lambda n: n >= 5, WAIT)
        for push in pushes:
            push.start()
        assert listener.wait_connections(lambda n: n == 3, WAIT)  # each push holds a slot
        for _ in range(4):
            reply = authenticated_exchange(listener.address, TOKEN, {"op": "status"})
            assert reply["error"] == {"type": "ListenerBusyError", "message": (
                "the listener is busy (3 connections in progress): retry later")}
        with pytest.raises(ListenerBusyError, match=r"the listener is busy") as caught:
            client.status(listener.address, token=TOKEN)
        assert caught.value.address == listener.address
        assert listener.connections == 3
        gate.set()  # the pushes end: their slots are free
        for push in pushes:
            push.join(WAIT)
        assert [r["ok"] for r in replies] == [True] * 3
        # a handler frees its slot just after its reply: wait for that, do not race it
        assert listener.wait_idle(WAIT) and listener.connections == 0
        assert client.status(listener.address, token=TOKEN)["ok"] is True
        for sock in silent:  # still waiting for their hello, never served
            sock.shutdown(socket.SHUT_WR)
            assert error_type(read_reply(sock)) == "ProtocolError"
    finally:
        gate.set()
        for sock in silent:
            sock.close()
        assert listener.stop(WAIT)


VOLUME = 10_000


@pytest.mark.timeout(300)
def test_ten_thousand_hostile_frames_are_all_refused(world):
    """A seeded stream of every kind of bad first frame, one connection each: random bytes,
    cut hellos, huge length prefixes, bad JSON, and unauthenticated frames over the limit
    before authentication or asking for a push. Each is refused, none runs code, and the
    listener goes on (the next test pushes a legitimate update)."""
    rng = random.Random(16)
    kinds = {
        "random bytes": lambda: rng.randbytes(rng.randint(0, 600)),
        "cut hello": lambda: hello()[:rng.randint(0, len(hello()) - 1)],
        "huge prefix": lambda: header(rng.randint(protocol.AUTH_FRAME_MAX + 1, 2**32 - 1))
        + rng.randbytes(rng.randint(0, 64)),
        "bad json": lambda: header(n := rng.randint(1, 200)) + rng.randbytes(n),
        "large unauthenticated": lambda: frame(
            {"op": "hello", "version": 2, "nonce": "00" * rng.randint(600, 2000)}),
        "push without proof": lambda: frame({"op": "push", "script": world.script}),
    }
    names = list(kinds)
    seen = dict.fromkeys(names, 0)
    for _ in range(VOLUME):
        name = rng.choice(names)
        refused(world, exchange(world.address, kinds[name]()))
        seen[name] += 1
    assert all(seen.values())  # every kind was sent
    assert world.listener.is_alive() and not world.marker.exists()


def test_afterwards_a_legitimate_update_still_applies(world):
    app = world.app
    assert not world.marker.exists()
    reply = client.push(world.address, update_script(world.manager), token=TOKEN, timeout=WAIT)
    assert reply["ok"] is True, reply
    assert reply["updates"] == [{"name": "greet v2", "state": "applied", "finished": True,
                                 "error": None}]
    assert app.wait_for(lambda a: a.last == "v2")
    assert app.thread is world.thread and app.thread.is_alive()  # the same thread, never stopped
    assert app.count > world.count and not app.errors
    assert world.listener.is_alive() and world.listener.applied_updates == ["greet v2"]
