"""Talking to a running application's update listener (what the ``pymoult`` command uses).

:func:`request` sends one request and returns the reply as it came; :func:`push`,
:func:`status` and :func:`history` build the request and raise when the listener refused it
(``AuthenticationError``, ``ListenerBusyError``, ``ProtocolError``, ``ListenerError``). A push
whose script raised or whose updates failed is *not* refused: its reply says ``"ok": false``.

The address defaults to ``$PYMOULT_ADDRESS`` and the token to ``$PYMOULT_TOKEN``. Failing to
reach the listener raises :class:`~pymoult.errors.ListenerError` (or
:class:`~pymoult.errors.ListenerTimeoutError`) naming the address.
"""

import errno
import os
import socket
import time

from . import protocol
from .errors import (AuthenticationError, ListenerBusyError, ListenerError, ListenerTimeoutError,
                     ProtocolError, PymoultValueError)

__all__ = ["request", "push", "status", "history", "MAX_REPLY", "DEFAULT_TIMEOUT",
           "PUSH_MARGIN"]

#: Size limit of a reply (a long history can be large).
MAX_REPLY = 64 << 20
#: Timeout of ``status`` and ``history`` (seconds).
DEFAULT_TIMEOUT = 30.0
#: Added to a push's ``timeout`` for the client's own wait (connecting, compiling, replying).
PUSH_MARGIN = 30.0

_REFUSALS = {"AuthenticationError": AuthenticationError, "ListenerBusyError": ListenerBusyError,
             "ProtocolError": ProtocolError}


def _resolve_address(address):
    if address is None:
        address = os.environ.get("PYMOULT_ADDRESS")
        if not address:
            raise PymoultValueError("no listener address: pass one or set PYMOULT_ADDRESS "
                                    "(e.g. unix:/run/user/1000/pymoult-x/listener.sock)")
    return protocol.parse_address(address)


def request(address, message, token=None, timeout=None):
    """Send ``message`` (a dict) to the listener at ``address`` and return its reply (a dict).

    ``token`` (default ``$PYMOULT_TOKEN``) is added to the message unless it has one.
    ``timeout`` bounds connecting and the wait for the whole reply (None: no limit).
    Raises ``ListenerError`` (``ListenerTimeoutError``) when no valid reply came,
    ``AuthenticationError`` when the socket's permissions refused the connection.
    """
    where = _resolve_address(address)
    message = dict(message)
    if message.get("token") is None:
        message.pop("token", None)
        token = token if token is not None else os.environ.get("PYMOULT_TOKEN")
        if token:
            message["token"] = token
    frame = protocol.encode_frame(message)
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = socket.socket(where.socket_family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(where.sockaddr)
        except TimeoutError:
            raise ListenerTimeoutError(f"the listener at {where} did not accept the connection "
                                       f"within {timeout} s", str(where)) from None
        except PermissionError:
            raise AuthenticationError(f"permission denied connecting to {where}: the socket "
                                      "belongs to another user", str(where)) from None
        except FileNotFoundError:
            raise ListenerError(f"no listener at {where}: the socket file does not exist",
                                str(where)) from None
        except OSError as exc:
            raise ListenerError(f"cannot connect to the listener at {where}: "
                                f"{exc.strerror or exc}", str(where)) from None
        send_error = None
        try:
            # the sending side stays open until the reply: over TCP, its end would tell the
            # listener that we have gone, and it would stop waiting for a push's updates
            sock.sendall(frame)
        except TimeoutError:
            raise ListenerTimeoutError(f"the listener at {where} did not take the request "
                                       f"within {timeout} s", str(where)) from None
        except OSError as exc:  # it may have refused early (too large...): read its reply
            send_error = exc
        left = None if deadline is None else max(0.001, deadline - time.monotonic())
        try:
            return protocol.recv_frame(sock, MAX_REPLY, left)
        except ProtocolError as exc:
            if exc.reason == "timeout":
                raise ListenerTimeoutError(f"no reply from the listener at {where} within "
                                           f"{timeout} s (a pushed update may still be running: "
                                           "ask for status)", str(where)) from None
            why = f"{exc}" if send_error is None else f"{send_error.strerror or send_error}"
            raise ListenerError(f"no valid reply from the listener at {where}: {why}",
                                str(where)) from None
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE) and send_error is None:
                raise ListenerError(f"lost the connection to the listener at {where}: "
                                    f"{exc.strerror or exc}", str(where)) from None
            raise ListenerError(f"the listener at {where} closed the connection without a "
                                "reply", str(where)) from None
    finally:
        sock.close()


def _checked(reply, where):
    """``reply`` unless it is a refusal, which is raised as the matching error."""
    error = reply.get("error")
    if reply.get("ok") is False and isinstance(error, dict):
        cls = _REFUSALS.get(error.get("type"), ListenerError)
        message = f"{where}: {error.get('message')}"
        raise cls(message) if cls is ProtocolError else cls(message, str(where))
    return reply


def push(address, script, wait=True, timeout=None, token=None):
    """Run update script ``script`` (its source text) in the application at ``address``.

    With ``wait`` the reply comes once every update the script queued has ended (or ``timeout``
    s have passed); otherwise right after the script ran. Returns the reply:
    ``{"ok", "script_error", "updates": [{"name", "state", "finished", "error"}...]}``.
    """
    where = _resolve_address(address)
    message = {"op": "push", "script": script, "wait": wait, "timeout": timeout}
    client_timeout = None if timeout is None else timeout + PUSH_MARGIN
    return _checked(request(where, message, token, client_timeout), where)


def status(address, token=None, timeout=DEFAULT_TIMEOUT):
    """The listener's and its managers' state: ``{"ok", "listener", "managers": [{"name",
    "kind", "current", "pending", "statistics"}...]}``."""
    where = _resolve_address(address)
    return _checked(request(where, {"op": "status"}, token, timeout), where)


def history(address, token=None, timeout=DEFAULT_TIMEOUT):
    """The managers' histories: ``{"ok", "managers": [{"name", "kind", "history": [record
    dicts]}...]}``."""
    where = _resolve_address(address)
    return _checked(request(where, {"op": "history"}, token, timeout), where)
