"""The wire format between the update listener and its clients (protocol version 2).

Every message is one *frame*: a 4-byte big-endian unsigned length, then that many bytes of
UTF-8 JSON holding one object. The reader checks the length against its size limit before
reading (nor allocating) the payload, and bounds the whole frame by a read timeout and each
silence by an idle timeout, so a client cannot make the listener hold memory or a thread for
long. Anything else is refused with :class:`~pymoult.errors.ProtocolError`.

Protocol 2: the handshake. The token never crosses the wire; each side proves it knows it,
the listener first, by an HMAC-SHA256 under the token over a label and both sides' fresh
32-byte nonces (``Session``)::

    client -> {"op": "hello", "version": 2, "nonce": "<client nonce, hex>"}
    server -> {"ok": true, "version": 2, "nonce": "<server nonce, hex>",
               "proof": HMAC(token, "pymoult/2 server proof\\0" + cn + sn)}
    client -> {"proof": HMAC(token, "pymoult/2 client proof\\0" + cn + sn),
               "request_mac": HMAC(token, "pymoult/2 request\\0" + cn + sn + request payload)}
    client -> the request (below), without any token
    server -> the reply, then {"mac": HMAC(token, "pymoult/2 reply\\0" + cn + sn + reply payload)}

The client checks the listener's proof (``hmac.compare_digest``) before it sends anything but
its hello, and the reply's MAC before it believes it; the listener checks the client's proof
before it reads the request, and the request against its MAC. The hello and the proof are
read with a limit of ``AUTH_FRAME_MAX`` bytes, within the listener's ``auth_timeout``; only
then may a frame be ``max_size``. Since both nonces are fresh on each connection, frames
recorded from one are refused on another (replay); a refusal (``{"ok": false, "error":
...}``) carries no MAC and proves nothing, it only ends the exchange. A listener without a
token (a Unix socket, whose peer uid it checks) answers the hello with ``"nonce": null,
"proof": null`` and reads the request next, unMACed, as its reply; a client accepts that only
over a Unix socket whose listener runs as its own user or root (``SO_PEERCRED``), never over
TCP. Such a listener also takes a request as the first frame (protocol 1). A listener with a
token refuses protocol 1's ``"token"`` field, and a hello of another version.

Requests::

    {"op": "push", "script": "<source>", "wait": true, "timeout": 30.0}
    {"op": "status"}
    {"op": "history"}
    {"op": "rollback", "updates": ["<name>", ...] | null, "timeout": 30.0}
    {"op": "push", ..., "two_phase": true, "hold": 5.0}
    {"op": "commit" | "abort", "transaction": "<id>", "timeout": 30.0}

A ``rollback`` reverts updates applied through this listener by recent pushes (null: those of
the last push that applied any), newest first, each by a ``RevertUpdate`` at a safe point; it is
answered when they have ended (or ``timeout`` s have passed) as a push is, with
``"script_error": null`` and one record per revert, or refused (``RevertError``) when there is
nothing by those names to revert.

A two-phase push (``"two_phase": true``, see ``pymoult.delivery.two_phase``) is answered once
every update it queued is prepared (threads held, about to apply), with ``"transaction": "<id>"``
(or ``null`` and the outcomes when that failed); ``commit`` applies them and answers with each
update's outcome and ``"applied_at"`` (wall-clock seconds), ``abort`` rolls them back. A
transaction not decided within ``hold`` seconds aborts by itself (``"decision": "expired"``).

Replies always carry ``"ok"``; a refused request gets
``{"ok": false, "error": {"type": "<error class>", "message": "..."}}``. A push is answered
with the script's exception, if it raised, and one record per update it queued::

    {"ok": true, "script_error": null | {"type", "message", "traceback"},
     "updates": [{"name": "...", "state": "applied", "finished": true, "error": null,
                  "steps": ["update method jobs.Job.run (line 8)", ...],
                  "warnings": ["thread Runner still runs the old code of jobs.main (line 12)
                               until it returns", ...]}]}

Fields are only ever added, never changed or removed, so a client ignores those it does not
know. ``steps`` and ``warnings`` (added with ``pymoult push --module``) are present only for an
update that lists its steps (a ``ModuleUpdate``): what it does, one line each, and, once it is
applied, one line per thread whose stack still runs code it replaced (empty otherwise). A
client keeps its connection open, sending side included, until it has the reply: a listener
serving a push takes the end of a TCP client's sending side for its departure (TCP cannot tell
a half-close from a close) and stops waiting for it (over a Unix socket only a real close
counts).

Addresses are strings: ``"unix:/path/to/socket"`` or ``"tcp:host:port"`` (``tcp:[::1]:port`` for
IPv6), and ``"pipe:/path"`` for a ``PipeListener``'s named pipe, which takes push frames one
after the other and sends no reply; :func:`parse_address` reads them and :class:`Address`
formats them back. A Unix socket's
path may have at most ``MAX_UNIX_PATH`` bytes (``sun_path`` with its final NUL): a longer one is
refused when the address is read, on either side, rather than failing obscurely later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError, PymoultTypeError, PymoultValueError

__all__ = ["MAX_FRAME", "MAX_UNIX_PATH", "OPS", "Address", "parse_address", "unix_path_error",
           "encode_frame", "decode_payload", "send_frame", "recv_frame", "FrameBuffer",
           "validate_request", "error_reply", "read_token_file", "check_token", "new_token",
           "PROTOCOL_VERSION", "AUTH_FRAME_MAX", "MIN_TOKEN_BYTES", "Session", "recv_payload",
           "DEFAULT_HOLD", "MAX_HOLD",
           "hello", "read_hello", "challenge", "is_refusal", "parse_nonce", "peer_uid",
           "NONCE_BYTES", "peer_credentials", "take_frame"]

#: Default size limit of a frame's payload (bytes).
MAX_FRAME = 1 << 20
#: The longest timeout a request may ask for (a week; also below threading.TIMEOUT_MAX).
MAX_TIMEOUT = 7 * 24 * 3600.0
#: The requests a listener answers.
OPS = ("push", "status", "history", "rollback", "commit", "abort")
#: Seconds a two-phase push's prepared updates wait for their commit, by default and at most.
DEFAULT_HOLD, MAX_HOLD = 5.0, 60.0
#: The longest path (bytes) of a Unix socket: ``sun_path`` holds 108 bytes on Linux, 104 on
#: macOS and the BSDs, the terminating NUL included (CPython refuses a path that fills it).
MAX_UNIX_PATH = (104 if sys.platform == "darwin" or "bsd" in sys.platform else 108) - 1

#: The version of the handshake this module speaks (see "Protocol 2" above).
PROTOCOL_VERSION = 2
#: Size limit of every frame read before the peer has authenticated (hello, proof, challenge).
AUTH_FRAME_MAX = 1024
#: The fewest bytes a token may have, once surrounding whitespace is stripped.
MIN_TOKEN_BYTES = 16
#: Bytes of randomness in each side's nonce.
NONCE_BYTES = 32

#: A decoded frame: a JSON object (a request, a reply, a handshake message).
Message = dict[str, Any]

_HEADER = struct.Struct(">I")
_MAX_INT_DIGITS = 64  # a JSON integer longer than this is refused (int() is quadratic before 3.11)


@dataclass(frozen=True)
class Address:
    """A listener address: ``family`` is ``"unix"`` or ``"pipe"`` (with ``path``) or ``"tcp"``
    (with ``host`` and ``port``); ``str()`` gives the ``unix:/path`` / ``tcp:host:port`` /
    ``pipe:/path`` form."""

    family: str
    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        if self.family == "unix" and self.path is not None:
            problem = unix_path_error(self.path)
            if problem is not None:
                raise PymoultValueError(f"cannot use unix:{self.path}: {problem}")

    def __str__(self) -> str:
        if self.family in ("unix", "pipe"):
            return f"{self.family}:{self.path}"
        host = self._tcp_host()
        host = f"[{host}]" if ":" in host else host
        return f"tcp:{host}:{self.port}"

    def _tcp_host(self) -> str:
        if self.host is None:
            raise PymoultValueError(f"a {self.family} address needs a host")
        return self.host

    @property
    def socket_family(self) -> socket.AddressFamily:
        """The ``socket.AF_*`` constant to open this address with."""
        self._check_socket()
        if self.family == "unix":
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self._tcp_host() else socket.AF_INET

    @property
    def sockaddr(self) -> str | tuple[str, int]:
        """What ``bind``/``connect`` take for this address."""
        self._check_socket()
        if self.family == "unix":
            if self.path is None:
                raise PymoultValueError("a unix address needs a path")
            return self.path
        if self.port is None:
            raise PymoultValueError(f"a {self.family} address needs a port")
        return self._tcp_host(), self.port

    def _check_socket(self) -> None:
        if self.family == "pipe":
            raise PymoultValueError(f"{self} is a named pipe, not a socket")


def unix_path_error(path: str | bytes | os.PathLike[str], what: str = "the path") -> str | None:
    """Why ``path`` cannot be a Unix socket's (it is longer than ``MAX_UNIX_PATH`` bytes), or
    None when it can. ``what`` names the path in the answer."""
    size = len(os.fsencode(path))
    if size <= MAX_UNIX_PATH:
        return None
    return (f"{what} is {size} bytes long, over the limit of {MAX_UNIX_PATH} bytes for a Unix "
            f"socket (sun_path holds {MAX_UNIX_PATH + 1} with the final NUL)")


def parse_address(text: str | Address) -> Address:
    """``"unix:/path"``, ``"tcp:host:port"`` (``tcp:[v6]:port``) or ``"pipe:/path"`` as an
    :class:`Address`.

    Raises ``PymoultValueError`` naming the address and the expected forms otherwise.
    """
    if isinstance(text, Address):
        return text
    if not isinstance(text, str):
        raise PymoultTypeError(f"an address must be a string like 'unix:/path' or "
                               f"'tcp:host:port', got {text!r}")
    family, sep, rest = text.partition(":")
    if family == "unix" and sep:
        if not rest or "\0" in rest:
            raise PymoultValueError(f"bad address {text!r}: 'unix:' needs a file path "
                                    "(abstract sockets are not supported)")
        path = os.path.abspath(rest)
        problem = unix_path_error(path)
        if problem is not None:
            raise PymoultValueError(f"bad address {text!r}: {problem}; choose a shorter path")
        return Address("unix", path=path)
    if family == "pipe" and sep:
        if not rest or "\0" in rest:
            raise PymoultValueError(f"bad address {text!r}: 'pipe:' needs the named pipe's path")
        return Address("pipe", path=os.path.abspath(rest))
    if family == "tcp" and sep:
        if rest.startswith("["):
            host, bracket, port = rest[1:].partition("]")
            if not bracket or not port.startswith(":"):
                raise PymoultValueError(f"bad address {text!r}: expected 'tcp:[v6 address]:port'")
            port = port[1:]  # without its ':'
        else:
            if ":" not in rest:
                raise PymoultValueError(f"bad address {text!r}: expected 'tcp:host:port' (the "
                                        "port is missing)")
            host, _, port = rest.rpartition(":")
            if ":" in host:
                raise PymoultValueError(f"bad address {text!r}: write an IPv6 host in brackets, "
                                        "'tcp:[::1]:port'")
        if not host:
            raise PymoultValueError(f"bad address {text!r}: expected 'tcp:host:port' with a host")
        if not (port.isdigit() and port.isascii() and 0 <= int(port) <= 65535):
            raise PymoultValueError(f"bad address {text!r}: the port must be a number from 0 "
                                    "to 65535")
        return Address("tcp", host=host, port=int(port))
    raise PymoultValueError(f"bad address {text!r}: expected 'unix:/path' or 'tcp:host:port' "
                            "(or 'pipe:/path' for a named pipe)")


def encode_frame(message: Message) -> bytes:
    """``message`` (a dict) as one frame: length prefix + UTF-8 JSON. Values JSON cannot hold
    are written as their ``str``."""
    if not isinstance(message, dict):
        raise PymoultTypeError(f"a message must be a dict, got {type(message).__name__}")
    payload = json.dumps(message, default=str).encode("ascii")  # lone surrogates too
    if len(payload) > 0xFFFFFFFF:
        raise ProtocolError(f"message of {len(payload)} bytes is too large for a frame",
                            "too_large")
    return _HEADER.pack(len(payload)) + payload


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits")
    return int(text)


def decode_payload(payload: bytes | bytearray | memoryview) -> Message:
    """The JSON object a frame's payload holds; ``ProtocolError`` if it is not UTF-8 JSON or
    not an object."""
    try:
        message = json.loads(bytes(payload).decode("utf-8"), parse_int=_bounded_int)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"the frame is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                            "malformed") from None
    except RecursionError:
        raise ProtocolError("the frame's JSON is nested too deeply", "malformed") from None
    except ValueError as exc:
        raise ProtocolError(f"the frame is not JSON ({exc})", "malformed") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"the frame must hold a JSON object, not {type(message).__name__}",
                            "malformed")
    return message


def send_frame(sock: socket.socket, message: Message, timeout: float | None = None) -> None:
    """Send ``message`` as one frame on ``sock`` (within ``timeout`` seconds per send)."""
    sock.settimeout(timeout)
    sock.sendall(encode_frame(message))


def _recv_exact(sock: socket.socket, size: int, deadline: float | None, idle: float | None,
                read_timeout: float | None, received: int) -> bytearray:
    data = bytearray()
    while len(data) < size:
        wait = idle
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"the frame was not complete within {read_timeout} s",
                                    "timeout")
            wait = left if wait is None else min(wait, left)
        sock.settimeout(wait)
        try:
            chunk = sock.recv(min(size - len(data), 65536))
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise ProtocolError(f"the frame was not complete within {read_timeout} s",
                                    "timeout") from None
            raise ProtocolError(f"no data for {idle} s in the middle of a frame",
                                "timeout") from None
        if not chunk:
            got = received + len(data)
            raise ProtocolError(f"the connection ended after {got} bytes, before the frame was "
                                "complete" if got else "the connection ended before any frame",
                                "truncated")
        data += chunk
    return data


def recv_frame(sock: socket.socket, max_size: int = MAX_FRAME, timeout: float | None = None,
               idle_timeout: float | None = None) -> Message:
    """Read one frame from ``sock`` and return its JSON object.

    The frame must arrive within ``timeout`` seconds, with no silence longer than
    ``idle_timeout`` (None: no limit); its payload may not exceed ``max_size`` bytes, which is
    checked from the length prefix before the payload is read. ``ProtocolError`` (``.reason``
    says which rule) otherwise; socket errors propagate.
    """
    return decode_payload(recv_payload(sock, max_size, timeout, idle_timeout))


def recv_payload(sock: socket.socket, max_size: int = MAX_FRAME, timeout: float | None = None,
                 idle_timeout: float | None = None) -> bytes:
    """As :func:`recv_frame`, but the frame's payload as bytes, undecoded (what a MAC covers)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    header = _recv_exact(sock, _HEADER.size, deadline, idle_timeout, timeout, 0)
    (size,) = _HEADER.unpack(header)
    if size > max_size:
        raise ProtocolError(f"frame of {size} bytes is over the limit of {max_size} bytes",
                            "too_large")
    return bytes(_recv_exact(sock, size, deadline, idle_timeout, timeout, _HEADER.size))


class FrameBuffer:
    """Cuts frames out of a byte stream that arrives in arbitrary chunks (a named pipe, where
    frames follow one another with no connection to end them).

    ``feed(chunk, now)`` adds bytes read at time ``now``; ``frames()`` then yields the payload
    of each complete frame. Each frame must be complete within ``timeout`` s of the arrival
    of its first byte: ``deadline`` is when the frame in progress runs out (None when no
    bytes are waiting). A frame that begins in the chunk that completed the one before it
    gets its own deadline, from that chunk's arrival, not what was left of its predecessor's.
    """

    def __init__(self, max_size: int, timeout: float) -> None:
        self.max_size = max_size
        self.timeout = timeout
        self.deadline: float | None = None
        self._data = bytearray()
        self._fed_at = 0.0  # when the last chunk came (time.monotonic())

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, chunk: bytes, now: float) -> None:
        """Add ``chunk``, read at ``now`` (``time.monotonic()``)."""
        if chunk and not self._data:
            self.deadline = now + self.timeout
        self._data += chunk
        self._fed_at = now

    def frames(self) -> Iterator[bytes]:
        """Yield each complete frame's payload (bytes), taking it out of the buffer. A length
        over ``max_size`` empties the buffer and raises ``ProtocolError`` (``"too_large"``):
        what follows cannot be told apart from the rest of that frame."""
        while len(self._data) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._data)
            if size > self.max_size:
                self.clear()
                raise ProtocolError(f"frame of {size} bytes is over the limit of "
                                    f"{self.max_size} bytes", "too_large")
            end = _HEADER.size + size
            if len(self._data) < end:
                return
            payload = bytes(self._data[_HEADER.size:end])
            del self._data[:end]
            # what is left began arriving with the last chunk: the next frame's clock starts then
            self.deadline = self._fed_at + self.timeout if self._data else None
            yield payload

    def clear(self) -> None:
        """Drop the bytes waiting (an incomplete frame)."""
        self._data.clear()
        self.deadline = None


def _number_or_none(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{what} must be a number of seconds or null, got {value!r}",
                            "bad_request")
    if not (math.isfinite(value) and 0 <= value <= MAX_TIMEOUT):
        raise ProtocolError(f"{what} must be between 0 and {MAX_TIMEOUT:g} s, got {value!r}",
                            "bad_request")
    return float(value)


def validate_request(message: Message) -> Message:
    """Check a decoded request's fields; returns it with defaults filled in (``wait`` true,
    ``timeout`` null). Unknown fields are ignored. ``ProtocolError`` (reason
    ``"bad_request"``) names the first wrong field."""
    op = message.get("op")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r}: expected one of {', '.join(OPS)}",
                            "bad_request")
    token = message.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("token must be a string", "bad_request")
    request = dict(message)
    if op == "push":
        if not isinstance(message.get("script"), str):
            raise ProtocolError("push needs 'script', the update script's source text",
                                "bad_request")
        wait = message.get("wait", True)
        if not isinstance(wait, bool):
            raise ProtocolError(f"wait must be true or false, got {wait!r}", "bad_request")
        request["wait"] = wait
        request["timeout"] = _number_or_none(message.get("timeout"), "timeout")
        two_phase = message.get("two_phase", False)
        if not isinstance(two_phase, bool):
            raise ProtocolError(f"two_phase must be true or false, got {two_phase!r}",
                                "bad_request")
        request["two_phase"] = two_phase
        hold = message.get("hold", DEFAULT_HOLD)
        if isinstance(hold, bool) or not isinstance(hold, (int, float)) \
                or not 0 < hold <= MAX_HOLD:
            raise ProtocolError(f"hold must be a number of seconds above 0 and at most "
                                f"{MAX_HOLD:g}, got {hold!r}", "bad_request")
        request["hold"] = float(hold)
    elif op in ("commit", "abort"):
        transaction = message.get("transaction")
        if not isinstance(transaction, str) or not transaction:
            raise ProtocolError(f"{op} needs 'transaction', the id a two-phase push replied",
                                "bad_request")
        request["timeout"] = _number_or_none(message.get("timeout"), "timeout")
    elif op == "rollback":
        names = message.get("updates")
        if names is not None and (not isinstance(names, list) or not names or not all(
                isinstance(name, str) and name for name in names)):
            raise ProtocolError("rollback's 'updates' must be null or a list of update names",
                                "bad_request")
        request["updates"] = names
        request["timeout"] = _number_or_none(message.get("timeout"), "timeout")
    return request


def error_reply(error_type: str, message: str) -> Message:
    """A refusal: ``{"ok": false, "error": {"type": ..., "message": ...}}``."""
    return {"ok": False, "error": {"type": error_type, "message": message}}


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of Unix socket ``sock`` (None where
    ``SO_PEERCRED`` does not exist)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of the process at the other end of Unix socket ``sock`` (None where
    ``SO_PEERCRED`` does not exist)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def take_frame(buffer: bytearray, max_size: int) -> bytes | None:
    """Cut the first complete frame out of ``buffer`` (a bytearray of bytes received so far):
    its payload as bytes, or None while it is incomplete. ``ProtocolError`` (``too_large``) as
    soon as the length prefix is over ``max_size``. For readers that cannot block."""
    if len(buffer) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack_from(buffer)
    if size > max_size:
        raise ProtocolError(f"frame of {size} bytes is over the limit of {max_size} bytes",
                            "too_large")
    if len(buffer) < _HEADER.size + size:
        return None
    payload = bytes(buffer[_HEADER.size:_HEADER.size + size])
    del buffer[:_HEADER.size + size]
    return payload


def new_token() -> str:
    """A fresh random token (43 URL-safe characters: 256 bits), what ``pymoult token`` prints."""
    import secrets
    return secrets.token_urlsafe(32)


def check_token(token: str, source: str) -> str:
    """``token`` without its surrounding whitespace; ``PymoultValueError`` naming ``source``
    (where it came from) when what is left is shorter than ``MIN_TOKEN_BYTES`` bytes."""
    token = token.strip()
    size = len(token.encode("utf-8", "surrogatepass"))
    if size < MIN_TOKEN_BYTES:
        raise PymoultValueError(f"the token from {source} is {size} byte{'s' * (size != 1)} "
                                f"long, under the {MIN_TOKEN_BYTES} required: make a strong "
                                "one with 'pymoult token' (e.g. pymoult token > FILE; chmod "
                                "600 FILE)")
    return token


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in file ``path`` (surrounding whitespace stripped).

    Refused with ``PymoultValueError`` when its group or others have any access to it (the
    token is a password: ``chmod 600`` it), is not a regular file, holds no token, or a token
    shorter than ``MIN_TOKEN_BYTES`` bytes.
    """
    try:
        # non-blocking: a FIFO would otherwise block the open until a writer comes
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise PymoultValueError(f"cannot read token file {path!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PymoultValueError(f"token file {path!r} is not a regular file")
        if info.st_mode & 0o077:
            raise PymoultValueError(f"token file {path!r} is accessible to group or others "
                                    f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 it")
        data = os.read(fd, 65537)
    finally:
        os.close(fd)
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PymoultValueError(f"token file {path!r} is not UTF-8 text") from None
    if not token or len(data) > 65536:
        raise PymoultValueError(f"token file {path!r} holds no token (or one over 64 KiB)")
    return check_token(token, f"token file {path!r}")


# -- protocol 2: the handshake -------------------------------------------------------------------

def parse_nonce(value: object, what: str) -> bytes:
    """The bytes of hex nonce ``value``; ``ProtocolError`` unless it is NONCE_BYTES of hex."""
    if not isinstance(value, str) or len(value) != 2 * NONCE_BYTES:
        raise ProtocolError(f"{what} must be {NONCE_BYTES} bytes in hex", "bad_request")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProtocolError(f"{what} must be {NONCE_BYTES} bytes in hex", "bad_request") from None


def hello(client_nonce: bytes) -> Message:
    """The first frame a protocol 2 client sends."""
    return {"op": "hello", "version": PROTOCOL_VERSION, "nonce": client_nonce.hex()}


def read_hello(message: Message) -> bytes:
    """The client nonce (bytes) of a hello frame; ``ProtocolError`` when it is not one this
    module speaks."""
    version = message.get("version")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError(f"unsupported protocol version {version!r} (this listener speaks "
                            f"{PROTOCOL_VERSION})", "bad_request")
    return parse_nonce(message.get("nonce"), "the hello's nonce")


def challenge(session: Session | None) -> Message:
    """The listener's answer to a hello: its nonce and its proof of the token, both null when
    it has no token (``session`` None)."""
    if session is None:
        return {"ok": True, "version": PROTOCOL_VERSION, "nonce": None, "proof": None}
    return {"ok": True, "version": PROTOCOL_VERSION, "nonce": session.server_nonce.hex(),
            "proof": session.server_proof()}


def is_refusal(reply: Message) -> bool:
    """True when ``reply`` is a refusal (``{"ok": false, "error": {...}}``)."""
    return reply.get("ok") is False and isinstance(reply.get("error"), dict)


class Session:
    """The keys of one protocol 2 connection: HMAC-SHA256 under the token, over a label and
    both sides' nonces (and, for a request or a reply, its payload). Each label is used for one
    purpose only, so no value one side computes can stand for another."""

    def __init__(self, token: str, client_nonce: bytes, server_nonce: bytes) -> None:
        self._key = token.encode("utf-8", "surrogatepass")
        self.client_nonce, self.server_nonce = client_nonce, server_nonce

    def _mac(self, label: bytes, data: bytes = b"") -> str:
        message = b"pymoult/2 " + label + b"\0" + self.client_nonce + self.server_nonce + data
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def server_proof(self) -> str:
        return self._mac(b"server proof")

    def client_proof(self) -> str:
        return self._mac(b"client proof")

    def request_mac(self, payload: bytes) -> str:
        return self._mac(b"request", payload)

    def reply_mac(self, payload: bytes) -> str:
        return self._mac(b"reply", payload)

    @staticmethod
    def matches(expected: str, given: object) -> bool:

        """Constant-time comparison of a MAC computed here with one received (any JSON)."""
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(expected.encode("ascii"),
                                   given.encode("utf-8", "surrogatepass"))
