"""The socket listener: update requests over a Unix socket (the default) or TCP.

:class:`Listener` is a daemon thread the application starts. A client (``pymoult.client``, the
``pymoult`` command) connects, sends one request frame (``pymoult.protocol``) and gets one reply:
a ``push`` request's script is run by ``pymoult.delivery.scripts``; ``status`` and ``history``
report on the managers, from their public snapshots (``Manager.status()``,
``Manager.history()``).

Running a pushed script is remote code execution by design, so the listener is locked down by
default: a Unix socket (mode 0600, in a private 0700 directory) whose peers must run as this
process's user (or root, which could take over the process anyway); TCP only when asked, on
loopback unless told otherwise, and then only with a token, which each side proves it knows
without sending it (protocol 2: ``pymoult.delivery.authentication``). Every connection has a
size limit and read and idle timeouts. Until its request has all arrived (and its client proved
the token) it is read by the listener's own thread, holding no thread and no slot, within caps
per peer (IP, or uid) and in all (``pymoult.delivery.peers``); only then does it take one of
``max_connections`` slots (a push whose client goes away frees its slot within
``WATCH_INTERVAL``; its updates go on). Every refusal gets an error reply when possible (after a
delay growing with its peer's recent failures) and a WARNING in the ``pymoult`` log naming the
peer (one line per peer and kind every ``log_interval``, the others counted), and nothing a
client sends ends the listener's thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import os
import select
import selectors
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable

from .. import protocol
from ..errors import (AuthenticationError, ListenerBusyError, ProtocolError, PymoultTypeError,
                      PymoultValueError, RevertError, ThreadStateError, TwoPhaseError)
from ..highlevel.managers import Manager, fetch_manager, live_managers
from .authentication import Handshake
from ..protocol import Address, Message
from .peers import READING, PeerFailures, PeerKey, PendingConnection, RefusalLog, Stage, peer_of
from .script_host import ScriptHost, check_positive
from .scripts import running_scripts

__all__ = ["Listener"]

logger = logging.getLogger("pymoult")

_connection_numbers = itertools.count(1)
_LINGER = 0.5  # seconds a handler waits for the client to close after the reply


def _private_runtime_dir() -> str | None:
    """$XDG_RUNTIME_DIR when it is a directory of ours that nobody else can enter, else None."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base:
        return None
    try:
        info = os.stat(base)
    except OSError:
        return None
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077:
        return base
    return None


def _check_unix_path(path: str, bound: str, advice: str, what: str = "the path") -> None:
    """``PymoultValueError`` naming ``path`` when ``bound`` (the path given to ``bind``) is too
    long for a Unix socket."""
    problem = protocol.unix_path_error(bound, what)
    if problem is not None:
        raise PymoultValueError(f"cannot listen on unix:{path}: {problem}; {advice}")


def _is_loopback(host: str | None) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


class Listener(ScriptHost, threading.Thread):
    """Receives requests (``push`` a script, ``status``, ``history``) and answers each.

    ``Listener()`` listens on a Unix socket ``listener.sock`` in a new private directory
    (under ``$XDG_RUNTIME_DIR`` when it is private, else the temporary directory);
    ``address="unix:/path"`` puts it at a path of your choice, ``address="tcp:host:port"`` (or
    the original's ``port=``, on 127.0.0.1 unless ``localhost=False``) on TCP, which needs a
    token. The token comes from ``token``, else from ``token_file`` (which must not be readable
    by group or others), else from ``$PYMOULT_TOKEN`` (then removed from the environment); it
    must have at least ``protocol.MIN_TOKEN_BYTES`` bytes. When there is one, every client,
    over Unix sockets too, must prove it knows it, and the listener proves it first: the token
    never crosses the wire (protocol 2, see ``pymoult.protocol``). Port 0 picks a free port:
    ``listener.address`` tells which.

    ``manager`` (a manager or its name; None: every live manager) is what ``status`` and
    ``history`` report on. Limits: ``protocol.AUTH_FRAME_MAX`` bytes per frame and
    ``auth_timeout`` s (at most ``read_timeout``) for the handshake, then ``max_size`` bytes per
    request, the whole request within ``read_timeout`` s and no silence longer than
    ``idle_timeout`` s (None: only ``read_timeout``), ``max_connections`` requests served
    at once (the next ones are told the listener is busy). Connections whose request has not
    all arrived hold no slot: at most ``max_pending_per_peer`` of them per peer (remote IP;
    uid over a Unix socket) and ``max_pending`` in all, the oldest dropped to make room. The
    reply to a refusal waits 0.1 s after one recent failure of its peer, doubling with each, at
    most ``failure_delay`` s (0: none). Refusals are logged once per peer and kind every
    ``log_interval`` s, with a count of the others.

    The socket is bound at construction; ``start()`` starts serving (and returns the listener),
    ``stop()`` closes the socket and removes its file.
    """

    def __init__(self, name: str = "Pymoult Listener", localhost: bool = True,
                 port: int | None = None, *, address: str | Address | None = None,
                 token: str | None = None, token_file: str | os.PathLike[str] | None = None,
                 manager: Manager | str | None = None, max_size: int = protocol.MAX_FRAME,
                 max_connections: int = 8, read_timeout: float = 10.0,
                 idle_timeout: float | None = None, auth_timeout: float = 5.0,
                 max_pending: int = 128, max_pending_per_peer: int = 32,
                 failure_delay: float = 2.0, log_interval: float = 10.0) -> None:
        threading.Thread.__init__(self, name=name, daemon=True)
        self._setup(token, token_file, max_size, read_timeout, idle_timeout)
        self.auth_timeout = min(float(check_positive(auth_timeout, "auth_timeout")),
                                self.read_timeout)
        self.max_connections = check_positive(max_connections, "max_connections", integer=True)
        self.max_pending = check_positive(max_pending, "max_pending", integer=True)
        self.max_pending_per_peer = min(self.max_pending, check_positive(
            max_pending_per_peer, "max_pending_per_peer", integer=True))
        if isinstance(failure_delay, bool) or not isinstance(failure_delay, (int, float)) \
                or not 0 <= failure_delay <= 60:
            raise PymoultValueError(f"failure_delay must be a number of seconds from 0 to 60, "
                                    f"got {failure_delay!r}")
        self.failure_delay = float(failure_delay)
        self.log_interval = float(check_positive(log_interval, "log_interval"))
        self._failures = PeerFailures(self.failure_delay)
        self._refusals = RefusalLog(self.name, self.log_interval)
        #: connections whose request has not all arrived, oldest first
        self._pending: dict[PendingConnection, None] = {}
        self._pending_changed = threading.Condition()
        self._selector: selectors.BaseSelector | None = None  # the listener thread's, in run
        if manager is not None and not isinstance(manager, (Manager, str)):
            raise PymoultTypeError(f"manager must be a Manager, a manager's name or None, "
                                   f"got {manager!r}")
        self.manager = manager
        if address is not None and port is not None:
            raise PymoultValueError("give address or port, not both")
        if port is not None:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise PymoultValueError(f"port must be an int from 0 to 65535, got {port!r}")
            address = protocol.Address("tcp", host="127.0.0.1" if localhost else "0.0.0.0",
                                       port=port)
        elif not localhost:
            raise PymoultValueError("localhost=False only applies to TCP (port= or "
                                    "address='tcp:...'); the default transport is a Unix socket")
        self._connections = 0  # in progress, each holding one of max_connections slots
        self._connections_changed = threading.Condition()
        self._handlers: set[threading.Thread] = set()
        self._handlers_lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()
        self._private_dir: str | None = None
        self._socket_id: tuple[int, int] | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            self._sock, self._address = self._bind(
                None if address is None else protocol.parse_address(address))
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        logger.info("%s: listening on %s%s", self.name, self._address,
                    " (token required)" if self.requires_token else "")

    # -- binding ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where the listener listens: ``"unix:/path"`` or ``"tcp:host:port"`` (the real port)."""
        return str(self._address)

    @property
    def _reader(self) -> selectors.BaseSelector:
        """The selector the listener's thread reads the pending connections with."""
        if self._selector is None:
            raise ThreadStateError(f"{self!r} is not serving")
        return self._selector

    def _bind(self, address: Address | None) -> tuple[socket.socket, Address]:
        if address is not None and address.family == "pipe":
            raise PymoultValueError(f"a Listener listens on a socket (unix: or tcp:); for "
                                    f"{address} use PipeListener({address.path!r})")
        if address is None or address.family == "unix":
            return self._bind_unix(None if address is None else address.path)
        if not self.requires_token:
            raise PymoultValueError(
                f"a TCP listener ({address}) needs a token: pass token= or token_file=, or set "
                "PYMOULT_TOKEN (or use the default Unix socket)")
        sock = socket.socket(address.socket_family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address.sockaddr)
            sock.listen(max(16, 2 * self.max_connections))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise PymoultValueError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        host, port = sock.getsockname()[:2]
        bound = protocol.Address("tcp", host=host, port=port)
        if not _is_loopback(address.host):
            logger.warning("%s: listening on %s, beyond this machine: scripts and replies travel "
                           "in clear text (the token does not); prefer loopback and an SSH "
                           "tunnel", self.name, bound)
        return sock, bound

    def _bind_unix(self, path: str | None) -> tuple[socket.socket, Address]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = None
        try:
            if path is None:  # a fresh 0700 directory: nobody else can reach the socket, ever
                self._private_dir = private = tempfile.mkdtemp(prefix="pymoult-",
                                                               dir=_private_runtime_dir())
                path = os.path.join(private, "listener.sock")
                _check_unix_path(path, path, "set TMPDIR (or XDG_RUNTIME_DIR) to a shorter "
                                 "directory, or pass address='unix:/shorter/path'")
                sock.bind(path)
                os.chmod(path, 0o600)
            else:  # bound in a private staging directory, made 0600, then moved into place
                self._refuse_live_path(path)
                staging = tempfile.mkdtemp(prefix=".p", dir=os.path.dirname(path))
                _check_unix_path(path, os.path.join(staging, "s"),
                                 "choose a path in a directory with a shorter name",
                                 f"the socket is bound first at {os.path.join(staging, 's')}, "
                                 "which")
                sock.bind(os.path.join(staging, "s"))
                os.chmod(os.path.join(staging, "s"), 0o600)
                os.replace(os.path.join(staging, "s"), path)
            info = os.lstat(path)
            self._socket_id = (info.st_dev, info.st_ino)
            sock.listen(max(16, 2 * self.max_connections))
            sock.setblocking(False)
        except BaseException as exc:
            sock.close()
            if self._private_dir is not None:
                _remove_quietly(os.path.join(self._private_dir, "listener.sock"))
                _rmdir_quietly(self._private_dir)
                self._private_dir = None
            if isinstance(exc, OSError):
                raise PymoultValueError(f"cannot listen on unix:{path}: "
                                        f"{exc.strerror or exc}") from None
            raise
        finally:
            if staging is not None:
                _remove_quietly(os.path.join(staging, "s"))
                _rmdir_quietly(staging)
        return sock, protocol.Address("unix", path=path)

    @staticmethod
    def _refuse_live_path(path: str) -> None:
        """A path in use is refused; a stale socket (nobody listening) may be replaced."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise PymoultValueError(f"cannot listen on unix:{path}: the path exists and is not "
                                    "a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError:
            return  # stale: nothing listens there
        finally:
            probe.close()
        raise PymoultValueError(f"cannot listen on unix:{path}: another listener serves it")

    # -- life --------------------------------------------------------------------------------

    def start(self) -> Listener:  # type: ignore[override]  # returns self, to chain
        """Start serving; returns the listener."""
        if self._closed:
            raise ThreadStateError(f"{self!r} was stopped: create a new listener")
        threading.Thread.start(self)
        self._serving()
        return self

    def __enter__(self) -> Listener:
        return self if self.is_alive() else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop(5.0)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop accepting, close the socket and remove its file (and private directory), then
        wait up to ``timeout`` s for the connections in progress (a pushed script that stops
        its own listener must give a timeout: its connection waits for it). True once every
        thread of the listener has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._sock.close()
                self._wake_r.close()
                self._wake_w.close()
                self._remove_socket_file()
                logger.info("%s: stopped listening on %s", self.name, self._address)
        self._not_serving()
        with self._handlers_lock:
            handlers = list(self._handlers)
        for handler in handlers:
            handler.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive() and not any(h.is_alive() for h in handlers)

    @property
    def connections(self) -> int:
        """The number of connections being served now (each holds one of
        ``max_connections``)."""
        with self._connections_changed:
            return self._connections

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no connection is being served; False if some still are after
        ``timeout`` s (None: no limit)."""
        with self._connections_changed:
            return self._connections_changed.wait_for(lambda: self._connections == 0, timeout)

    def wait_connections(self, predicate: Callable[[int], bool],
                         timeout: float | None = None) -> bool:
        """Block until ``predicate(number of connections being served)`` is true; False after
        ``timeout`` s."""
        with self._connections_changed:
            return self._connections_changed.wait_for(lambda: predicate(self._connections),
                                                      timeout)

    def _remove_socket_file(self) -> None:
        path = self._address.path
        if self._address.family != "unix" or path is None:
            return
        try:
            info = os.lstat(path)
            if (info.st_dev, info.st_ino) == self._socket_id:  # still ours, not a successor's
                os.unlink(path)
        except OSError:
            pass
        if self._private_dir is not None:
            _rmdir_quietly(self._private_dir)

    def run(self) -> None:
        selector = self._selector = selectors.DefaultSelector()
        try:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select(self._next_wait()):
                    if key.fileobj is self._wake_r:
                        return
                    if key.fileobj is self._sock:
                        self._accept()
                    elif key.data in self._pending:
                        self._readable(key.data)
                self._expire(time.monotonic())
        except BaseException:  # nothing may escape the listener's thread
            if not self._stopping.is_set():
                logger.exception("%s: the listener failed", self.name)
        finally:
            for pending in list(self._pending):
                self._drop(pending)
            selector.close()

    # -- connections before their request has arrived: read here, holding no thread ---------

    def _accept(self) -> None:
        try:
            conn, address = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of file descriptors...: back off, keep serving
            logger.warning("%s: accept failed: %s", self.name, exc)
            self._stopping.wait(0.1)
            return
        now = time.monotonic()
        peer, where, uid = peer_of(conn, address)
        who = f"connection {next(_connection_numbers)} from {where}"
        pending = PendingConnection(conn, who, peer, now)
        self._make_room(peer)
        try:
            conn.setblocking(False)
            self._reader.register(conn, selectors.EVENT_READ, pending)
        except (OSError, ValueError) as exc:
            logger.warning("%s: could not watch %s: %s", self.name, pending.who, exc)
            conn.close()
            return
        with self._pending_changed:
            self._pending[pending] = None
            self._pending_changed.notify_all()
        self._expect(pending, "first", now)
        if uid is not None and uid not in (os.geteuid(), 0):
            self._refuse(pending, AuthenticationError(
                f"authentication failed: peer runs as uid {uid}, the listener as uid "
                f"{os.geteuid()}"), now)

    def _make_room(self, peer: PeerKey) -> None:
        """Keep the unauthenticated connections within ``max_pending_per_peer`` for ``peer``
        and ``max_pending`` in all, dropping (without a reply) the one to go first: one already
        refused, else the oldest; from the peer holding the most when the total is reached."""
        mine = [p for p in self._pending if p.peer == peer]
        if len(mine) >= self.max_pending_per_peer:
            self._evict(mine, f"over the cap of {self.max_pending_per_peer} unauthenticated "
                              "connections from one peer")
        if len(self._pending) >= self.max_pending:
            counts: dict[PeerKey, int] = {}
            for each in self._pending:
                counts[each.peer] = counts.get(each.peer, 0) + 1
            greediest = max(counts, key=lambda each: counts[each])
            self._evict([p for p in self._pending if p.peer == greediest],
                        f"over the cap of {self.max_pending} unauthenticated connections")

    def _evict(self, candidates: list[PendingConnection], why: str) -> None:
        refused = [p for p in candidates if p.stage in ("penalty", "closing")]
        victim = (refused or candidates)[0]  # the dict keeps them oldest first
        if victim.stage not in ("penalty", "closing"):
            self._refusals.refused(victim.peer, "dropped", logging.WARNING,
                                   f"{self.name}: dropped {victim.who} (unauthenticated, "
                                   f"the oldest): {why}", time.monotonic())
        self._drop(victim)

    def _drop(self, pending: PendingConnection) -> None:
        with self._pending_changed:
            if self._pending.pop(pending, 0) is None:
                self._pending_changed.notify_all()
        try:
            self._reader.unregister(pending.conn)
        except (KeyError, ValueError, OSError):
            pass
        pending.conn.close()

    def _expect(self, pending: PendingConnection, stage: Stage, now: float) -> None:
        """``pending`` now waits for its ``stage`` frame: its size limit and deadline."""
        pending.stage = stage
        token = self._token is not None
        if stage == "first":
            pending.limit = protocol.AUTH_FRAME_MAX if token else self.max_size
            span = self.auth_timeout if token else self.read_timeout
            pending.deadline = now + span
            pending.late = f"the frame was not complete within {span} s"
        elif stage == "proof":
            pending.limit = protocol.AUTH_FRAME_MAX  # the deadline stays the first frame's
            pending.late = f"the authentication was not complete within {self.auth_timeout} s"
        else:  # "request"
            pending.limit = self.max_size
            pending.deadline = now + self.read_timeout
            pending.late = f"the frame was not complete within {self.read_timeout} s"

    def _readable(self, pending: PendingConnection) -> None:
        now = time.monotonic()
        try:
            chunk = pending.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._refusals.refused(pending.peer, "lost", logging.INFO,
                                   f"{self.name}: {pending.who} failed: {exc}", now)
            self._failures.record(pending.peer, now)
            self._drop(pending)
            return
        if pending.stage == "closing":  # after a refusal: read and drop until the client closes
            pending.dropped += len(chunk)
            if not chunk or pending.dropped > self.max_size:
                self._drop(pending)
            return
        pending.last_byte = now
        if not chunk:
            self._ended(pending, now)
            return
        pending.buffer += chunk
        try:
            while pending in self._pending and pending.stage in READING:
                payload = protocol.take_frame(pending.buffer, pending.limit)
                if payload is None:
                    return
                self._frame(pending, payload, now)
        except (AuthenticationError, ProtocolError) as exc:
            self._refuse(pending, exc, now)
        except OSError as exc:
            self._refusals.refused(pending.peer, "lost", logging.INFO,
                                   f"{self.name}: {pending.who} failed: {exc}", now)
            self._drop(pending)

    def _ended(self, pending: PendingConnection, now: float) -> None:
        got = len(pending.buffer)
        error: ProtocolError | AuthenticationError
        if got:
            error = ProtocolError(f"the connection ended after {got} bytes, before the frame "
                                  "was complete", "truncated")
        elif pending.stage == "proof":
            error = AuthenticationError("the connection ended after the challenge, before any "
                                        "proof: a wrong token (the client found the "
                                        "listener's proof wrong), or not a pymoult client")
        else:
            error = ProtocolError("the connection ended before any frame", "truncated")
        self._refuse(pending, error, now)

    def _frame(self, pending: PendingConnection, payload: bytes, now: float) -> None:
        if pending.stage == "first":
            first = protocol.decode_payload(payload)
            pending.handshake = handshake = Handshake(self._token)
            challenge = handshake.first(first)
            if challenge is None:  # a request that needs no authentication
                return self._ready(pending, protocol.validate_request(first))
            if pending.conn.send(challenge) != len(challenge):  # small: a buffer takes it
                raise OSError("could not send the challenge at once")
            return self._expect(pending, "proof" if handshake.needs_proof else "request", now)
        made = pending.handshake
        if made is None:  # the first frame makes it: a later stage always has one
            raise ProtocolError(f"a {pending.stage} frame before the first", "bad_request")
        if pending.stage == "proof":
            made.check_proof(protocol.decode_payload(payload))
            return self._expect(pending, "request", now)
        made.check_request(payload)
        return self._ready(pending, protocol.validate_request(protocol.decode_payload(payload)))

    def _refuse(self, pending: PendingConnection, error: Exception, now: float,
                failure: bool = True) -> None:
        """Refuse ``pending`` with ``error``: logged (at most one line per peer and kind of
        refusal every ``log_interval`` s), then answered, after a delay growing with the
        peer's recent failures when it is one; meanwhile it holds no thread."""
        kind = type(error).__name__ + "/" + str(getattr(error, "reason", ""))
        quiet = isinstance(error, ProtocolError) and error.reason == "truncated" \
            and not pending.buffer and pending.stage == "first"  # a port probe, a health check
        self._refusals.refused(pending.peer, kind, logging.INFO if quiet else logging.WARNING,
                               f"{self.name}: refused {pending.who}: {error}", now)
        pending.reply = protocol.encode_frame(protocol.error_reply(type(error).__name__,
                                                                   str(error)))
        delay = 0.0
        if failure:
            self._failures.record(pending.peer, now)
            delay = self._failures.delay(pending.peer, now)
        try:
            self._reader.unregister(pending.conn)
        except (KeyError, ValueError, OSError):
            pass
        pending.stage, pending.deadline = "penalty", now + delay
        if not delay:
            self._send_refusal(pending, now)

    def _send_refusal(self, pending: PendingConnection, now: float) -> None:
        try:
            pending.conn.send(pending.reply or b"")
            pending.conn.shutdown(socket.SHUT_WR)
            self._reader.register(pending.conn, selectors.EVENT_READ, pending)
        except (OSError, ValueError):
            self._drop(pending)
            return
        pending.stage, pending.deadline = "closing", now + min(_LINGER, self.read_timeout)

    def _expire(self, now: float) -> None:
        for pending in list(self._pending):
            if pending.deadline is not None and now >= pending.deadline:
                if pending.stage == "penalty":
                    self._send_refusal(pending, now)
                elif pending.stage == "closing":
                    self._drop(pending)
                else:
                    late = pending.late or "the frame was not complete in time"
                    self._refuse(pending, ProtocolError(late, "timeout"), now)
            elif (self.idle_timeout is not None and pending.stage in READING
                  and now - pending.last_byte >= self.idle_timeout):
                self._refuse(pending, ProtocolError(
                    f"no data for {self.idle_timeout} s in the middle of a frame", "timeout"),
                    now)
        self._refusals.flush(now)

    def _next_wait(self) -> float | None:
        due = [p.deadline for p in self._pending if p.deadline is not None]
        if self.idle_timeout is not None:
            due += [p.last_byte + self.idle_timeout for p in self._pending
                    if p.stage in READING]
        flush = self._refusals.next_due()
        if flush is not None:
            due.append(flush)
        return None if not due else max(0.0, min(due) - time.monotonic())

    def _ready(self, pending: PendingConnection, request: Message) -> None:
        """The request has all arrived (after the proof and the MAC when there is a token): the
        connection leaves the unauthenticated ones and takes a slot to be served."""
        if not self._take_slot():
            return self._refuse(pending, ListenerBusyError(
                f"the listener is busy ({self.max_connections} connections in progress): "
                "retry later"), time.monotonic(), failure=False)
        self._drop_watch(pending)
        conn, who = pending.conn, pending.who
        handler = threading.Thread(target=self._serve,
                                   args=(conn, who, request, pending.handshake),
                                   name=f"{self.name} {who.split(' from')[0]}", daemon=True)
        with self._handlers_lock:
            self._handlers.add(handler)
        try:
            handler.start()
        except Exception:  # no thread to serve it (out of threads): drop it, keep listening
            logger.exception("%s: could not start a handler for %s; connection dropped",
                             self.name, who)
            with self._handlers_lock:
                self._handlers.discard(handler)
            self._release_slot()
            conn.close()
        return None

    def _drop_watch(self, pending: PendingConnection) -> None:
        """Stop reading ``pending`` here (it goes to a handler thread), keeping it open."""
        with self._pending_changed:
            self._pending.pop(pending, None)
            self._pending_changed.notify_all()
        self._reader.unregister(pending.conn)
        pending.conn.setblocking(True)

    @property
    def pending(self) -> int:
        """The number of connections whose request has not all arrived (unauthenticated: they
        hold no slot of ``max_connections``, nor a thread)."""
        with self._pending_changed:
            return len(self._pending)

    def wait_pending(self, predicate: Callable[[int], bool],
                     timeout: float | None = None) -> bool:
        """Block until ``predicate(number of pending connections)`` is true; False after
        ``timeout`` s."""
        with self._pending_changed:
            return self._pending_changed.wait_for(lambda: predicate(len(self._pending)),
                                                  timeout)

    def _take_slot(self) -> bool:
        with self._connections_changed:
            if self._connections >= self.max_connections:
                return False
            self._connections += 1
            self._connections_changed.notify_all()
            return True

    def _release_slot(self) -> None:
        with self._connections_changed:
            self._connections -= 1
            self._connections_changed.notify_all()

    # -- one connection, once its request has arrived ---------------------------------------

    def _serve(self, conn: socket.socket, who: str, request: Message,
               handshake: Handshake | None) -> None:
        try:
            reply = self._answer(conn, who, request)
            if reply is not None:
                try:
                    data = protocol.encode_frame(reply)
                    if handshake is not None:  # the reply's MAC: no impostor can forge it
                        data += handshake.sign(data)
                    conn.settimeout(self.read_timeout)
                    conn.sendall(data)
                    conn.shutdown(socket.SHUT_WR)
                    _drain(conn, min(_LINGER, self.read_timeout), self.max_size)
                except OSError as exc:
                    logger.warning("%s: could not reply to %s: %s", self.name, who, exc)
        except BaseException:  # nothing a client does may escape the handler
            logger.exception("%s: internal error serving %s", self.name, who)
        finally:
            conn.close()
            self._release_slot()
            with self._handlers_lock:
                self._handlers.discard(threading.current_thread())

    def _answer(self, conn: socket.socket, who: str, request: Message) -> Message | None:
        """The reply to the connection's request (None: no reply can be sent)."""
        op = request["op"]
        logger.info("%s: %s asks for %s", self.name, who, op)
        serve: Callable[[Message, _ClientWatch, str], Message | None] | None
        serve, goes_on = {
            "push": (self._push, "its updates go on"),
            "commit": (self._decide, "its updates go on"),
            "abort": (self._decide, "its updates roll back"),
            "rollback": (self._rollback, "the reverts go on")}.get(op, (None, None))
        if serve is not None:  # served while watching that the client is still there
            watch = _ClientWatch(conn, self._address.family == "tcp", self.max_size)
            try:
                reply = serve(request, watch, who)
            except (RevertError, TwoPhaseError) as exc:  # nothing to revert, no transaction
                return protocol.error_reply(type(exc).__name__, str(exc))
            if reply is None:
                logger.warning("%s: %s: the client %s while its %s was served: no reply "
                               "sent; %s (ask for status)", self.name, who, watch.why, op,
                               goes_on)
            return reply
        if op == "status":
            return {"ok": True, "listener": self._describe(),
                    "managers": [m.status().as_dict() for m in self._reported_managers()]}
        return {"ok": True, "managers": [
            {"name": m.name, "kind": type(m).__name__,
             "history": [record.as_dict() for record in m.history()],
             "forgotten": m.forgotten()}
            for m in self._reported_managers()]}

    def _describe(self) -> Message:
        return {"name": self.name, "address": self.address,
                "applied_updates": list(self.applied_updates),
                "applied_total": self.applied_total, "scripts": running_scripts(),
                "connections": self.connections, "pending": self.pending}

    def _reported_managers(self) -> list[Manager]:
        if self.manager is None:
            return live_managers()
        if isinstance(self.manager, str):
            found = fetch_manager(self.manager)
            return [] if found is None else [found]
        return [self.manager]

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "serving" if self.is_alive() else "not started"
        return f"<Listener {self.name!r} {self.address} {state}>"


class _ClientWatch:
    """Called while a push is served (``run_script``'s ``abandoned``): true once its client
    has gone, so that the handler stops waiting and frees its slot; ``why`` then says how.

    A Unix socket reports its peer's close as a hang-up (``POLLHUP``), distinct from a
    client that only shut down its sending side and still waits for the reply. TCP cannot
    tell those two apart without writing, so over TCP the end of the client's sending side
    counts as its departure (``pymoult.client`` keeps it open until the reply). Bytes sent
    after the request are read and dropped; more than ``limit`` of them also ends the wait.
    """

    def __init__(self, conn: socket.socket, tcp: bool, limit: int) -> None:
        self._conn, self._tcp, self._limit = conn, tcp, limit
        self._poll = select.poll()
        self._poll.register(conn, select.POLLIN)
        self._dropped = 0
        self.why: str | None = None

    def __call__(self) -> bool:
        for _, events in self._poll.poll(0):
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                self.why = "closed the connection"
                return True
            if not events & select.POLLIN:
                continue
            try:
                chunk = self._conn.recv(65536)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue
            except OSError as exc:
                self.why = f"lost the connection ({exc.strerror or exc})"
                return True
            if not chunk:
                if self._tcp:
                    self.why = "ended its side of the TCP connection (taken as gone)"
                    return True
                self._poll.modify(self._conn, 0)  # half-closed: only a hang-up matters now
                continue
            self._dropped += len(chunk)
            if self._dropped > self._limit:
                self.why = f"sent over {self._limit} bytes after its request"
                return True
        return False


def _drain(conn: socket.socket, seconds: float, limit: int) -> None:
    """Read and drop what the client still sends, for at most ``seconds`` and ``limit`` bytes
    (so that closing does not reset the connection before the client read the reply)."""
    deadline = time.monotonic() + seconds
    dropped = 0
    try:
        while dropped <= limit:
            left = deadline - time.monotonic()
            if left <= 0:
                conn.setblocking(False)
            else:
                conn.settimeout(left)
            chunk = conn.recv(65536)
            if not chunk:
                return
            dropped += len(chunk)
    except (OSError, ValueError):
        return


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _rmdir_quietly(path: str) -> None:

    with contextlib.suppress(OSError):
        os.rmdir(path)
