"""Slow and failing clients cannot starve a legitimate one.

Connections whose request has not all arrived (unauthenticated) are read by the listener's own
thread: they hold no thread and none of ``max_connections``; they are capped per peer (remote
IP, or uid over a Unix socket) and in all, the oldest dropped first; refusals come after a
delay growing with the peer's recent failures, holding no thread or slot meanwhile.
"""

import os
import statistics
import sys
import threading
import time
import types

import pytest

from listening import (WAIT, authenticated_exchange, connect, error_type, frame, read_reply,
                       send_authenticated)
from pymoult import client, protocol
from pymoult.highlevel.listener import Listener

TOKEN = "s3cret-token-of-the-starvation-tests"
PROBE = "starvation_probe"
# the pushed script records how many unauthenticated connections were open while it ran
PROBE_SCRIPT = f"import sys\nprobe = sys.modules[{PROBE!r}]\n" \
               "probe.seen.append(probe.listener.pending)\n"


@pytest.fixture(autouse=True)
def no_token_in_environment(monkeypatch):
    monkeypatch.delenv("PYMOULT_TOKEN", raising=False)


class SlowClients:
    """``count`` clients that each send ``data`` one byte every ``pace`` s, never finishing,
    and connect again once cut off."""

    def __init__(self, address, count, data, pace=0.5):
        self.address, self.data, self.pace = address, data, pace
        self.stop = threading.Event()
        self.connected = 0
        self.changed = threading.Condition()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                sock = connect(self.address)
            except OSError:
                self.stop.wait(self.pace)
                continue
            with self.changed:
                self.connected += 1
                self.changed.notify_all()
            try:
                for byte in self.data[:-1]:
                    if self.stop.wait(self.pace):
                        break
                    sock.send(bytes([byte]))
            except OSError:  # cut off: connect again
                pass
            finally:
                sock.close()
                with self.changed:
                    self.connected -= 1
                    self.changed.notify_all()

    def wait_connected(self, count):
        with self.changed:
            return self.changed.wait_for(lambda: self.connected >= count, WAIT)

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(WAIT)


@pytest.fixture
def probe(monkeypatch):
    module = types.SimpleNamespace(listener=None, seen=[])
    monkeypatch.setitem(sys.modules, PROBE, module)
    return module


def pushes_under_load(listener, probe, slow, count, token):
    """``count`` pushes in a row while ``slow`` clients keep trickling; their durations."""
    probe.listener = listener
    assert slow.wait_connected(len(slow.threads))
    assert listener.wait_pending(lambda n: n >= len(slow.threads) // 2, WAIT)
    durations = []
    for _ in range(count):
        began = time.monotonic()
        reply = client.push(listener.address, PROBE_SCRIPT, token=token, timeout=WAIT)
        durations.append(time.monotonic() - began)
        assert reply["ok"] is True, reply
    assert len(probe.seen) == count
    # served while the slow clients were connected (some may be between two connections)
    assert min(probe.seen) >= len(slow.threads) // 2, probe.seen
    sys.stderr.write(f"\n{count} pushes among {len(slow.threads)} slow clients: median "
                     f"{statistics.median(durations):.3f} s, max {max(durations):.3f} s\n")
    return durations


@pytest.mark.timeout(120)
def test_32_slow_tcp_clients_do_not_starve_a_push(probe):
    listener = Listener(address="tcp:127.0.0.1:0", token=TOKEN).start()
    slow = SlowClients(listener.address, 32, frame(protocol.hello(os.urandom(32))))
    try:
        pushes_under_load(listener, probe, slow, 20, TOKEN)
        # the slow ones hold no slot: once the last push's slot is freed, none is held
        assert listener.wait_connections(lambda n: n == 0, WAIT), listener.connections
    finally:
        slow.close()
        assert listener.stop(WAIT)


@pytest.mark.timeout(120)
def test_8_slow_unix_clients_of_the_same_uid_do_not_starve_a_push(probe):
    listener = Listener().start()  # no token: the peer's uid is its authentication
    slow = SlowClients(listener.address, 8, frame({"op": "push", "script": "x = 1\n" * 20}))
    try:
        pushes_under_load(listener, probe, slow, 20, None)
    finally:
        slow.close()
        assert listener.stop(WAIT)


@pytest.mark.timeout(60)
def test_the_oldest_unauthenticated_connection_of_a_peer_over_its_cap_is_dropped(probe):
    listener = Listener(address="tcp:127.0.0.1:0", token=TOKEN, max_pending_per_peer=4).start()
    held = []
    try:
        for _ in range(6):
            held.append(connect(listener.address))
            assert listener.wait_pending(lambda n: n == min(len(held), 4), WAIT)
        for sock in held[:2]:  # dropped without a reply, to make room
            assert read_reply(sock) is None
        assert listener.wait_pending(lambda n: n == 4, WAIT)  # the sixth is in
        probe.listener = listener
        assert client.push(listener.address, PROBE_SCRIPT, token=TOKEN, timeout=WAIT)["ok"]
        assert read_reply(held[2]) is None  # the push's connection took the oldest one's place
        assert probe.seen == [3]  # and, authenticated, left the unauthenticated ones
    finally:
        for sock in held:
            sock.close()
        assert listener.stop(WAIT)


@pytest.mark.timeout(60)
def test_the_total_cap_drops_from_the_peer_holding_most(probe):
    listener = Listener(token=TOKEN, max_pending=3).start()
    held = []
    try:
        for _ in range(5):
            held.append(connect(listener.address))
            assert listener.wait_pending(lambda n: n == min(len(held), 3), WAIT)
        assert [read_reply(sock) for sock in held[:2]] == [None, None]
        assert client.status(listener.address, token=TOKEN)["ok"]
    finally:
        for sock in held:
            sock.close()
        assert listener.stop(WAIT)


@pytest.mark.timeout(60)
def test_failures_delay_the_next_refusals_holding_no_slot():
    listener = Listener(token=TOKEN, failure_delay=0.8).start()
    wrong = "a-wrong-token-of-the-starvation-tests"
    try:
        delays = []
        for _ in range(4):
            began = time.monotonic()
            reply = authenticated_exchange(listener.address, wrong, {"op": "status"})
            delays.append(time.monotonic() - began)
            assert error_type(reply) == "AuthenticationError"
        # 0.1, 0.2, 0.4 then the bound 0.8 s: lower bounds only (a slow machine takes longer)
        assert delays[0] >= 0.1 and delays[1] >= 0.2 and delays[2] >= 0.4 \
            and delays[3] >= 0.8, delays
        # meanwhile a refused connection holds no slot: a legitimate request is served at once
        with connect(listener.address) as sock:
            send_authenticated(sock, wrong, {"op": "status"})
            assert listener.wait_pending(lambda n: n == 1, WAIT)
            assert listener.connections == 0
            assert client.status(listener.address, token=TOKEN)["ok"] is True
            assert error_type(read_reply(sock)) == "AuthenticationError"
    finally:
        assert listener.stop(WAIT)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_pending": 0}, "max_pending must be positive"),
    ({"max_pending_per_peer": -1}, "max_pending_per_peer must be positive"),
    ({"failure_delay": -1}, "failure_delay must be a number of seconds from 0 to 60"),
    ({"failure_delay": "1"}, "failure_delay must be a number of seconds from 0 to 60"),
    ({"log_interval": 0}, "log_interval must be positive"),
])
def test_limits_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):  # one sentence, before anything is bound
        Listener(**kwargs)
