"""Helpers shared by the listener tests: a live application, raw connections, update scripts."""

import logging
import os
import socket
import struct
import sys
import threading
import types

from pymoult import protocol
from pymoult.errors import ProtocolError
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

WAIT = 10.0
APP = "listener_test_app"

UPDATE_SCRIPT = """#parsed
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate

app = sys.modules[{app!r}]

def greet():
    return "v2"

fetch_manager({manager!r}).add_update(
    SafeRedefineUpdate(app, app.greet, greet, name="greet v2", threads=[app.worker]))
"""

MARKER_SCRIPT = "open({path!r}, 'w').close()\n"


class App:
    """A module ``listener_test_app`` whose DSU_Thread ``worker`` calls ``greet`` (through a
    reference taken before any update) and reaches an update point in a loop."""

    def __init__(self, stop):
        self.module = module = types.ModuleType(APP)
        exec("def greet():\n    return 'v1'\n", module.__dict__)
        self.changed = threading.Condition()
        self.count, self.last, self.errors = 0, None, []
        self.stop = stop
        module.worker = self.thread = DSU_Thread(target=self._work, name="greeter", daemon=True)
        sys.modules[APP] = module

    def _work(self):
        greet = self.module.greet  # an old reference: relinking must reach it
        while not self.stop.is_set():
            try:
                value = greet()
            except Exception as exc:
                self.errors.append(exc)
                raise
            with self.changed:
                self.count += 1
                self.last = value
                self.changed.notify_all()
            staticUpdatePoint()
            self.stop.wait(0.001)  # a pace, not a synchronisation

    def wait_for(self, predicate):
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), WAIT)

    def close(self):
        sys.modules.pop(APP, None)


class LogWatcher(logging.Handler):
    """Collects the ``pymoult`` log's WARNING records while in use; ``wait_for(text)`` returns
    once one contains ``text`` (False after WAIT s)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
        self.changed = threading.Condition()

    def emit(self, record):
        with self.changed:
            self.messages.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, text):
        with self.changed:
            return self.changed.wait_for(lambda: any(text in m for m in self.messages), WAIT)

    def __enter__(self):
        logging.getLogger("pymoult").addHandler(self)
        return self

    def __exit__(self, *exc_info):
        logging.getLogger("pymoult").removeHandler(self)


def update_script(manager):
    return UPDATE_SCRIPT.format(app=APP, manager=manager.name)


def connect(address):
    where = protocol.parse_address(address)
    sock = socket.socket(where.socket_family, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(where.sockaddr)
    return sock


def frame(message):
    return protocol.encode_frame(message)


def header(size):
    return struct.pack(">I", size)


def read_reply(sock):
    """The reply frame on ``sock`` (None if the listener closed without one)."""
    try:
        return protocol.recv_frame(sock, protocol.MAX_FRAME * 64, WAIT)
    except (ProtocolError, ConnectionError):
        return None


def exchange(address, data, close_write=True):
    """Send raw ``data``, end the request (unless told not to) and return the reply."""
    with connect(address) as sock:
        try:
            sock.sendall(data)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # refused early: the reply is waiting
            pass
        return read_reply(sock)


def error_type(reply):
    assert reply is not None, "the listener closed the connection without replying"
    assert reply["ok"] is False, reply
    return reply["error"]["type"]


__all__ = ["App", "WAIT", "APP", "update_script", "connect", "frame", "header", "read_reply",
           "exchange", "error_type", "MARKER_SCRIPT", "LogWatcher"]


def send_authenticated(sock, token, request, mac_of=None):
    """Protocol 2 on open connection ``sock``: hello, the challenge, then the proof and
    ``request`` (a dict, or a frame's payload as bytes), with the MAC of ``mac_of`` (default:
    the request's payload). Returns the ``protocol.Session``. The listener's proof is checked
    only when ``token`` is its token (a test with a wrong one sends it anyway)."""
    client_nonce = os.urandom(protocol.NONCE_BYTES)
    sock.sendall(frame(protocol.hello(client_nonce)))
    answer = protocol.recv_frame(sock, protocol.AUTH_FRAME_MAX, WAIT)
    assert answer["ok"] is True and answer["proof"], answer
    session = protocol.Session(token, client_nonce, bytes.fromhex(answer["nonce"]))
    payload = frame(request)[4:] if isinstance(request, dict) else request
    sock.sendall(frame({"proof": session.client_proof(),
                        "request_mac": session.request_mac(payload if mac_of is None
                                                           else mac_of)})
                 + header(len(payload)) + payload)
    return session


def authenticated_exchange(address, token, request, mac_of=None):
    """``send_authenticated`` on a new connection; the reply (None if none came)."""
    with connect(address) as sock:
        try:
            send_authenticated(sock, token, request, mac_of)
        except OSError:  # refused early: the reply is waiting
            pass
        return read_reply(sock)


def send_request(sock, request, token=None):
    """``request`` (a dict) on ``sock``: after the handshake with ``token``, else as is."""
    if token is None:
        sock.sendall(frame(request))
    else:
        send_authenticated(sock, token, request)


__all__ += ["send_authenticated", "send_request", "authenticated_exchange"]
