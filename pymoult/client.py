"""Talking to a running application's update listener (what the ``pymoult`` command uses).

:func:`request` sends one request and returns the reply as it came; :func:`push`,
:func:`status` and :func:`history` build the request and raise when the listener refused it
(``AuthenticationError``, ``ListenerBusyError``, ``ProtocolError``, ``ListenerError``). A push
whose script raised or whose updates failed is *not* refused: its reply says ``"ok": false``.

The address defaults to ``$PYMOULT_ADDRESS`` and the token to ``$PYMOULT_TOKEN``. Failing to
reach the listener raises :class:`~pymoult.errors.ListenerError` (or
:class:`~pymoult.errors.ListenerTimeoutError`) naming the address.

A ``pipe:/path`` address is a ``PipeListener``'s named pipe: :func:`push` writes the request
frame into it and returns None, since a pipe carries no reply (the application logs the
outcome); it cannot wait, and ``status``, ``history`` and :func:`request` need a socket.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import time
from collections.abc import Iterable
from typing import Literal, overload

from . import protocol
from .errors import (AuthenticationError, ListenerBusyError, ListenerError, ListenerTimeoutError,
                     ProtocolError, PymoultTypeError, PymoultValueError, RevertError,
                     TwoPhaseError)
from .protocol import Address, Message

__all__ = ["request", "push", "commit", "abort", "rollback", "status", "history",
           "resolve_address", "MAX_REPLY", "DEFAULT_TIMEOUT", "PUSH_MARGIN"]

#: Size limit of a reply (a long history can be large).
MAX_REPLY = 64 << 20
#: Timeout of ``status`` and ``history`` (seconds).
DEFAULT_TIMEOUT = 30.0
#: Added to a push's ``timeout`` for the client's own wait (connecting, compiling, replying).
PUSH_MARGIN = 30.0

_REFUSALS: dict[object, type[Exception]] = {
    "AuthenticationError": AuthenticationError, "ListenerBusyError": ListenerBusyError,
    "ProtocolError": ProtocolError, "RevertError": RevertError, "TwoPhaseError": TwoPhaseError}


def resolve_address(address: str | Address | None) -> Address:
    """``address`` (a string or an ``Address``; None: ``$PYMOULT_ADDRESS``) as a
    ``protocol.Address``; ``PymoultValueError`` when there is none or it is malformed."""
    if address is None:
        address = os.environ.get("PYMOULT_ADDRESS")
        if not address:
            raise PymoultValueError("no listener address: pass one or set PYMOULT_ADDRESS "
                                    "(e.g. unix:/run/user/1000/pymoult-x/listener.sock)")
    return protocol.parse_address(address)


def request(address: str | Address | None, message: Message, token: str | None = None,
            timeout: float | None = None) -> Message:
    """Send ``message`` (a dict) to the listener at ``address`` and return its reply (a dict).

    ``token`` (default ``$PYMOULT_TOKEN``; or the message's ``"token"``, taken out of it) is
    never sent: the client and the listener each prove they know it (protocol 2, see
    ``pymoult.protocol``), the listener first, so that nothing goes to an impostor. Over a Unix
    socket the listener must also run as this user or root (``SO_PEERCRED``).
    ``timeout`` bounds connecting and the wait for the whole reply (None: no limit).
    Raises ``ListenerError`` (``ListenerTimeoutError``) when no valid reply came,
    ``AuthenticationError`` when the socket's permissions refused the connection or either
    side failed to authenticate the other, ``PymoultValueError`` for a token shorter than
    ``protocol.MIN_TOKEN_BYTES`` or a named pipe (``pipe:``), which cannot reply.
    """
    where = resolve_address(address)
    if where.family == "pipe":
        raise PymoultValueError(f"{where} is a named pipe, which carries no reply: "
                                f"{message.get('op', 'a request')} needs the application's "
                                "socket listener (unix: or tcp:)")
    message = dict(message)
    given = message.pop("token", None)
    token = _client_token(token if given is None else given)
    frame = protocol.encode_frame(message)
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = socket.socket(where.socket_family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(where.sockaddr)
        except TimeoutError:
            raise ListenerTimeoutError(f"the listener at {where} did not accept the connection "
                                       f"within {timeout} s", str(where), False) from None
        except PermissionError:
            raise AuthenticationError(f"permission denied connecting to {where}: the socket "
                                      "belongs to another user", str(where)) from None
        except FileNotFoundError:
            raise ListenerError(f"no listener at {where}: the socket file does not exist",
                                str(where), False) from None
        except OSError as exc:
            raise ListenerError(f"cannot connect to the listener at {where}: "
                                f"{exc.strerror or exc}", str(where), False) from None
        if where.family == "unix":
            uid = protocol.peer_uid(sock)
            if uid is not None and uid not in (os.geteuid(), 0):
                raise AuthenticationError(f"the listener at {where} runs as uid {uid}, neither "
                                          f"yours ({os.geteuid()}) nor root's: it may be an "
                                          "impostor, and nothing was sent to it", str(where))
        return _Conversation(sock, where, timeout, deadline).run(frame, token)
    finally:
        sock.close()


class _Conversation:
    """One connection's exchange, client side: hello, challenge, proof and request, reply."""

    def __init__(self, sock: socket.socket, where: Address, timeout: float | None,
                 deadline: float | None) -> None:
        self.sock, self.where, self.timeout, self.deadline = sock, where, timeout, deadline
        self.send_error: OSError | None = None

    def run(self, frame: bytes, token: str | None) -> Message:
        client_nonce = os.urandom(protocol.NONCE_BYTES)
        self._send(protocol.encode_frame(protocol.hello(client_nonce)))
        answer = protocol.decode_payload(self._receive(MAX_REPLY))
        if protocol.is_refusal(answer):  # busy, or an error in the hello
            return answer
        session = self._session(answer, token, client_nonce)
        if session is None:  # a Unix listener without a token, whose uid was checked
            self._send(frame)
            return protocol.decode_payload(self._receive(MAX_REPLY))
        proof = {"proof": session.client_proof(), "request_mac": session.request_mac(frame[4:])}
        # the sending side stays open until the reply: over TCP, its end would tell the
        # listener that we have gone, and it would stop waiting for a push's updates
        self._send(protocol.encode_frame(proof) + frame)
        payload = self._receive(MAX_REPLY)
        reply = self._decode(payload)
        if protocol.is_refusal(reply):  # a refusal proves nothing, and gives nothing away
            return reply
        mac = self._decode(self._receive(protocol.AUTH_FRAME_MAX))
        if not protocol.Session.matches(session.reply_mac(payload), mac.get("mac")):
            raise ListenerError(f"the reply from {self.where} does not carry the listener's "
                                "MAC: it may come from an impostor, and tells nothing of the "
                                "request's outcome", str(self.where))
        return reply

    def _session(self, answer: Message, token: str | None,
                 client_nonce: bytes) -> protocol.Session | None:
        """The connection's ``protocol.Session`` once the listener proved it knows the token
        (None for a Unix listener that has none); ``AuthenticationError`` otherwise."""
        where = self.where
        if answer.get("ok") is not True or answer.get("version") != protocol.PROTOCOL_VERSION \
                or "proof" not in answer or "nonce" not in answer:
            raise AuthenticationError(f"the listener at {where} did not answer the handshake of "
                                      f"protocol {protocol.PROTOCOL_VERSION}: it is not a "
                                      "Pymoult listener of this version, and nothing was sent "
                                      "to it", str(where))
        if answer["proof"] is None:
            if where.family != "unix":
                raise AuthenticationError(f"the listener at {where} claims to need no token, "
                                          "which a TCP listener never does: it may be an "
                                          "impostor, and nothing was sent to it", str(where))
            return None
        if token is None:
            raise AuthenticationError(f"{where}: authentication failed: this listener needs a "
                                      "token", str(where))
        try:
            server_nonce = protocol.parse_nonce(answer["nonce"], "the listener's nonce")
        except ProtocolError:
            server_nonce = None
        session = None if server_nonce is None else \
            protocol.Session(token, client_nonce, server_nonce)
        if session is None or \
                not protocol.Session.matches(session.server_proof(), answer["proof"]):
            raise AuthenticationError(f"{where}: authentication failed: the listener did not "
                                      "prove it knows the token (the token is wrong, or this "
                                      "is not the application's listener), and nothing was "
                                      "sent to it", str(where))
        return session

    def _left(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.001, self.deadline - time.monotonic())

    def _send(self, data: bytes) -> None:
        if self.send_error is not None:
            return
        try:
            self.sock.settimeout(self._left())
            self.sock.sendall(data)
        except TimeoutError:
            raise ListenerTimeoutError(f"the listener at {self.where} did not take the request "
                                       f"within {self.timeout} s", str(self.where)) from None
        except OSError as exc:  # it may have refused early (too large...): read its reply
            self.send_error = exc

    def _decode(self, payload: bytes) -> Message:
        try:
            return protocol.decode_payload(payload)
        except ProtocolError as exc:
            raise ListenerError(f"no valid reply from the listener at {self.where}: {exc}",
                                str(self.where)) from None

    def _receive(self, limit: int) -> bytes:
        where, send_error = self.where, self.send_error
        try:
            return protocol.recv_payload(self.sock, limit, self._left())
        except ProtocolError as exc:
            if exc.reason == "timeout":
                raise ListenerTimeoutError(f"no reply from the listener at {where} within "
                                           f"{self.timeout} s (a pushed update may still be "
                                           "running: ask for status)", str(where)) from None
            why = f"{exc}" if send_error is None else f"{send_error.strerror or send_error}"
            raise ListenerError(f"no valid reply from the listener at {where}: {why}",
                                str(where)) from None
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE) and send_error is None:
                raise ListenerError(f"lost the connection to the listener at {where}: "
                                    f"{exc.strerror or exc}", str(where)) from None
            raise ListenerError(f"the listener at {where} closed the connection without a "
                                "reply", str(where)) from None


def _client_token(token: str | None) -> str | None:
    """``token``, else ``$PYMOULT_TOKEN`` (None when neither is set or empty), checked to be
    at least ``protocol.MIN_TOKEN_BYTES`` bytes once stripped."""
    source = "the token given"
    if token is None:
        token, source = os.environ.get("PYMOULT_TOKEN"), "PYMOULT_TOKEN"
    if not token:
        return None
    if not isinstance(token, str):
        raise PymoultTypeError(f"a token must be a string, got {type(token).__name__}")
    return protocol.check_token(token, source)


def _with_token(message: Message, token: str | None) -> Message:
    """``message`` with ``token`` (default ``$PYMOULT_TOKEN``) added unless it has one: the
    named pipe's protocol 1 (a pipe has no way back for a challenge; it is a local file that
    only its owner may open, and the client checks the owner)."""
    message = dict(message)
    if message.get("token") is None:
        message.pop("token", None)
        token = _client_token(token)
        if token:
            message["token"] = token
    return message


def _pipe_error(where: Address, exc: OSError) -> ListenerError | AuthenticationError:
    """The error to raise when opening the named pipe at ``where`` failed with ``exc``."""
    if exc.errno == errno.ENXIO:  # a FIFO opened for writing without blocking, with no reader
        return ListenerError(f"no application is reading {where.path}: nothing has the pipe "
                             "open (has the application stopped?)", str(where))
    if exc.errno == errno.ENOENT:
        return ListenerError(f"no pipe at {where.path}: the file does not exist", str(where))
    if isinstance(exc, PermissionError):
        return AuthenticationError(f"permission denied opening {where.path}: the pipe belongs "
                                   "to another user", str(where))
    return ListenerError(f"cannot open the pipe {where.path}: {exc.strerror or exc}",
                         str(where))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket (use unix:PATH)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a named pipe"


def _write_to_pipe(where: Address, data: bytes, timeout: float) -> None:
    """Write ``data`` (one frame) into the named pipe at ``where`` within ``timeout`` s.

    The pipe is opened without blocking, so that a pipe nobody reads is reported at once
    instead of blocking the open, and is checked to be a FIFO before (nothing else is opened:
    opening a device can act on it) and after opening. The write holds an exclusive ``flock``
    on the pipe, so that the frames of two ``pymoult`` clients never interleave (the reader
    cannot tell them apart otherwise).
    """
    path = where.path
    if path is None:
        raise PymoultValueError(f"{where} names no pipe")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _pipe_error(where, exc) from None
    if not stat.S_ISFIFO(info.st_mode):
        raise ListenerError(f"{where.path} is not a named pipe ({_kind(info.st_mode)})",
                            str(where))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _pipe_error(where, exc) from None
    deadline = time.monotonic() + timeout
    written = 0
    try:
        info = os.fstat(fd)
        if not stat.S_ISFIFO(info.st_mode):  # replaced since the check above
            raise ListenerError(f"{where.path} is not a named pipe", str(where))
        if info.st_uid not in (os.geteuid(), 0):  # the token goes to whoever reads the pipe
            raise AuthenticationError(f"the pipe {where.path} belongs to uid {info.st_uid}, "
                                      f"neither you ({os.geteuid()}) nor root: it may be an "
                                      "impostor's, and nothing was written to it", str(where))
        _lock(fd, where, deadline, timeout)
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        while written < len(data):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ListenerTimeoutError(
                    f"the application did not read {where.path} within {timeout} s ({written} "
                    f"of {len(data)} bytes written: it will drop the incomplete frame)",
                    str(where))
            if not poller.poll(left * 1000):
                continue
            try:
                written += os.write(fd, data[written:written + 65536])
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise ListenerError(f"the application stopped reading {where.path} after "
                                    f"{written} of {len(data)} bytes", str(where)) from None
    finally:
        os.close(fd)


def _lock(fd: int, where: Address, deadline: float, timeout: float) -> None:
    """An exclusive ``flock`` on the pipe, waited for until ``deadline``."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ListenerTimeoutError(f"another client kept writing into {where.path} for "
                                           f"{timeout} s", str(where)) from None
            time.sleep(0.01)  # flock has no timed wait
        except OSError:  # a system without flock on pipes: write unlocked
            return


def _checked(reply: Message, where: Address) -> Message:
    """``reply`` unless it is a refusal, which is raised as the matching error."""
    error = reply.get("error")
    if reply.get("ok") is False and isinstance(error, dict):
        cls = _REFUSALS.get(error.get("type"), ListenerError)
        message = f"{where}: {error.get('message')}"
        if cls in (ProtocolError, RevertError, TwoPhaseError):
            raise cls(message)
        if cls is AuthenticationError:
            raise cls(message, str(where))
        raise cls(message, str(where), False)  # refused: the listener did not act on it
    return reply


@overload
def push(address: str | Address | None, script: str, wait: Literal[True] = True,
         timeout: float | None = None, token: str | None = None, *, two_phase: bool = False,
         hold: float | None = None) -> Message: ...


@overload
def push(address: str | Address | None, script: str, wait: bool = True,
         timeout: float | None = None, token: str | None = None, *, two_phase: bool = False,
         hold: float | None = None) -> Message | None: ...


def push(address: str | Address | None, script: str, wait: bool = True,
         timeout: float | None = None, token: str | None = None, *, two_phase: bool = False,
         hold: float | None = None) -> Message | None:
    """Run update script ``script`` (its source text) in the application at ``address``.

    With ``wait`` the reply comes once every update the script queued has ended (or ``timeout``
    s have passed); otherwise right after the script ran. Returns the reply:
    ``{"ok", "script_error", "updates": [{"name", "state", "finished", "error"}...]}``.

    To a named pipe (``pipe:/path``) the request is written and None returned, as soon as the
    application has read it: no reply comes back, so ``wait`` must be false
    (``PymoultValueError`` otherwise), and the script's outcome is in the application's log.
    The write must end within ``timeout`` + ``PUSH_MARGIN`` s (``DEFAULT_TIMEOUT`` without a
    ``timeout``). ``ListenerError`` when the pipe does not exist, is not a pipe, or nothing
    reads it.

    ``two_phase``: the reply comes once every update is *prepared* (threads held, about to
    apply), with ``"transaction"``, which :func:`commit` applies and :func:`abort` rolls back;
    undecided after ``hold`` s (default ``protocol.DEFAULT_HOLD``) it aborts by itself (see
    ``pymoult.delivery.two_phase``). Not over a pipe.
    """
    where = resolve_address(address)
    message: Message = {"op": "push", "script": script, "wait": wait, "timeout": timeout}
    if two_phase:
        if where.family == "pipe":
            raise PymoultValueError(f"a two-phase push needs a reply, and {where} is a named "
                                    "pipe, which carries none")
        message.update(two_phase=True, hold=protocol.DEFAULT_HOLD if hold is None else hold)
    client_timeout = None if timeout is None else timeout + PUSH_MARGIN
    if where.family == "pipe":
        if wait:
            raise PymoultValueError(f"cannot wait for the outcome of a push to {where}: a named "
                                    "pipe carries no reply (push with wait=False; the "
                                    "application logs the outcome)")
        frame = protocol.encode_frame(_with_token(message, token))
        _write_to_pipe(where, frame, DEFAULT_TIMEOUT if client_timeout is None
                       else client_timeout)
        return None
    return _checked(request(where, message, token, client_timeout), where)


def status(address: str | Address | None, token: str | None = None,
           timeout: float | None = DEFAULT_TIMEOUT) -> Message:
    """The listener's and its managers' state: ``{"ok", "listener", "managers": [{"name",
    "kind", "current", "pending", "statistics"}...]}``."""
    where = resolve_address(address)
    return _checked(request(where, {"op": "status"}, token, timeout), where)


def rollback(address: str | Address | None, updates: Iterable[str] | None = None,
             timeout: float | None = None, token: str | None = None) -> Message:
    """Revert updates applied through the listener at ``address`` by its recent pushes, newest
    first, each at a safe point (``RevertUpdate``): those named in ``updates`` (a list of
    update names), or those of the last push that applied any. Returns the reply once they
    have ended (or ``timeout`` s have passed): ``{"ok", "script_error": None, "updates":
    [{"name": "revert ...", "state", "finished", "error"}...], "not_reverted": [names]}``;
    ``RevertError`` when the listener has nothing by those names to revert."""
    where = resolve_address(address)
    if where.family == "pipe":
        raise PymoultValueError(f"cannot roll back through {where}: a named pipe carries no "
                                "reply (use the application's socket listener)")
    if updates is not None:
        if isinstance(updates, str) or not all(isinstance(name, str) and name
                                               for name in updates):
            raise PymoultTypeError(f"updates must be a list of update names, got {updates!r}")
        names: list[str] | None = list(updates)
        if not names:
            raise PymoultValueError("name at least one update to roll back (or None: those of "
                                    "the last push)")
    else:
        names = None
    message = {"op": "rollback", "updates": names, "timeout": timeout}
    client_timeout = None if timeout is None else timeout + PUSH_MARGIN
    return _checked(request(where, message, token, client_timeout), where)


def commit(address: str | Address | None, transaction: str, timeout: float | None = None,
           token: str | None = None) -> Message:
    """Apply the updates a two-phase push prepared (``transaction``: the id it replied);
    returns the reply once they have ended: ``{"ok", "decision", "updates": [{..., "applied_at":
    wall-clock seconds or None}]}``. ``"decision": "expired"`` when the hold ran out first
    (then they were rolled back). ``TwoPhaseError`` when the listener has no such transaction."""
    return _decide(address, "commit", transaction, timeout, token)


def abort(address: str | Address | None, transaction: str, timeout: float | None = None,
          token: str | None = None) -> Message:
    """Roll back the updates a two-phase push prepared, having applied nothing; the reply once
    they have ended."""
    return _decide(address, "abort", transaction, timeout, token)


def _decide(address: str | Address | None, op: str, transaction: str, timeout: float | None,
            token: str | None) -> Message:
    where = resolve_address(address)
    if not isinstance(transaction, str) or not transaction:
        raise PymoultTypeError(f"transaction must be the id a two-phase push replied, got "
                               f"{transaction!r}")
    message = {"op": op, "transaction": transaction, "timeout": timeout}
    client_timeout = None if timeout is None else timeout + PUSH_MARGIN
    return _checked(request(where, message, token, client_timeout), where)


def history(address: str | Address | None, token: str | None = None,
            timeout: float | None = DEFAULT_TIMEOUT) -> Message:

    """The managers' histories: ``{"ok", "managers": [{"name", "kind", "history": [record
    dicts]}...]}``."""
    where = resolve_address(address)
    return _checked(request(where, {"op": "history"}, token, timeout), where)
