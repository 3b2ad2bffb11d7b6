"""The socket listener's connections before their request has arrived, and their peers.

A connection that has not yet authenticated and sent its request is a
:class:`PendingConnection`, read by the listener's own thread, holding no thread and no slot.
Its :func:`peer_of` (the remote IP over TCP, the uid over a Unix socket) is what the listener
counts its caps by; :class:`PeerFailures` remembers each peer's recent refusals, which delay
its next refusal's reply; :class:`RefusalLog` logs refusals with their peer, one line per peer
and kind every interval, the others counted.
"""

from __future__ import annotations

import collections
import logging
import socket
from typing import TYPE_CHECKING, Literal

from .. import protocol

if TYPE_CHECKING:
    from .authentication import Handshake

__all__ = ["PendingConnection", "PeerFailures", "RefusalLog", "READING", "peer_of"]

logger = logging.getLogger("pymoult")

#: What a peer's limits are counted by: ``("ip", address)``, ``("uid", uid)`` or ``("unix",)``.
PeerKey = tuple[str | int, ...]
#: Where a pending connection is (see :class:`PendingConnection`).
Stage = Literal["first", "proof", "request", "penalty", "closing"]

#: The stages of a pending connection that read a frame.
READING: tuple[Stage, ...] = ("first", "proof", "request")


class PendingConnection:
    """A connection whose request has not all arrived, read by the listener's own thread:
    ``stage`` is the frame it waits for (``first``, ``proof``, ``request``), then ``penalty``
    (refused, the reply held back) and ``closing`` (replied, draining until it closes)."""

    __slots__ = ("conn", "who", "peer", "since", "last_byte", "buffer", "stage", "limit",
                 "deadline", "late", "handshake", "reply", "dropped")

    def __init__(self, conn: socket.socket, who: str, peer: PeerKey, now: float) -> None:
        self.conn, self.who, self.peer = conn, who, peer
        self.since = self.last_byte = now
        self.buffer = bytearray()
        self.stage: Stage | None = None
        self.limit = 0
        self.deadline: float | None = None
        self.late: str | None = None  # what a timeout's refusal says
        self.handshake: Handshake | None = None
        self.reply: bytes | None = None  # a refusal's frame, held back for the penalty
        self.dropped = 0


def peer_of(conn: socket.socket, address: object) -> tuple[PeerKey, str, int | None]:
    """``(key, text, uid)`` of the peer of an accepted connection: the key its limits are
    counted by (the remote IP for TCP, the uid for a Unix socket), how the log names it
    (``127.0.0.1:50312``, ``uid 1000 pid 4242``) and its uid (None over TCP)."""
    if isinstance(address, tuple) and address:
        return ("ip", address[0]), f"{address[0]}:{address[1]}", None
    try:
        creds = protocol.peer_credentials(conn)
    except OSError:
        creds = None
    if creds is None:
        return ("unix",), "a Unix socket peer", None
    pid, uid, _ = creds
    return ("uid", uid), f"uid {uid} pid {pid}", uid


class PeerFailures:
    """Recent failures (refusals) per peer, for the delay before the next refusal's reply:
    0.1 s after one failure in the last ``WINDOW`` s, doubling with each, at most ``limit``
    (0: no delay). Bounded: the last ``KEEP`` failures of at most ``PEERS`` peers."""

    WINDOW, KEEP, PEERS, FIRST = 60.0, 32, 1024, 0.1

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._times: dict[PeerKey, collections.deque[float]] = {}

    def record(self, peer: PeerKey, now: float) -> None:
        times = self._times.pop(peer, None) or collections.deque(maxlen=self.KEEP)
        times.append(now)
        self._times[peer] = times  # most recent last
        while len(self._times) > self.PEERS:
            del self._times[next(iter(self._times))]

    def delay(self, peer: PeerKey, now: float) -> float:
        times = self._times.get(peer)
        if not self.limit or not times:
            return 0.0
        while times and now - times[0] > self.WINDOW:
            times.popleft()
        if not times:
            return 0.0
        return min(self.limit, self.FIRST * 2 ** min(len(times) - 1, 30))


class RefusalLog:
    """Logs refusals, one line per peer and kind of refusal every ``interval`` s: the ones
    between are counted, and the count logged once the interval is over (``flush``)."""

    MAX_KEYS = 4096

    def __init__(self, name: str, interval: float) -> None:
        self.name, self.interval = name, interval
        #: (peer, kind) -> [when logged, level, not logged since]
        self._seen: dict[tuple[PeerKey, str], list[float]] = {}

    def refused(self, peer: PeerKey, kind: str, level: int, line: str, now: float) -> None:
        key = (peer, kind)
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[2] += 1
            return
        if seen is not None and seen[2]:
            line += f" (and {seen[2]} more like it from this peer in {self.interval:g} s)"
        logger.log(level, "%s", line)
        self._seen.pop(key, None)
        self._seen[key] = [now, level, 0]
        while len(self._seen) > self.MAX_KEYS:
            del self._seen[next(iter(self._seen))]

    def flush(self, now: float) -> None:
        for (peer, kind), seen in list(self._seen.items()):
            if now - seen[0] < self.interval:
                continue
            if seen[2]:
                logger.log(int(seen[1]), "%s: %d more refusals (%s) from %s in %g s not logged one "
                           "by one", self.name, seen[2], kind, " ".join(map(str, peer)),
                           self.interval)
                seen[0], seen[2] = now, 0
            else:
                del self._seen[(peer, kind)]

    def next_due(self) -> float | None:

        due = [seen[0] + self.interval for seen in self._seen.values() if seen[2]]
        return min(due, default=None)
