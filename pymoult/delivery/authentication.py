"""Who may push: the listeners' token, and the server's side of the handshake.

:func:`resolve_token` finds a listener's token (given, in a file, or in ``$PYMOULT_TOKEN``,
which is then removed from the environment) and refuses a weak one. :class:`Handshake` is the
listener's side of protocol 2 on one connection (``pymoult.protocol`` describes the wire):
it answers the client's hello with a challenge that proves the listener knows the token,
checks the client's proof, then the request against the MAC sent with it, and signs the reply,
so that the token never crosses the wire and a frame recorded on one connection is refused on
another. :func:`check_message_token` is protocol 1's check, kept for the named pipe, which has
no way back for a challenge. A failed check raises ``AuthenticationError``; what to do about it
(a reply, a delay, a log line) is the caller's.
"""

from __future__ import annotations

import hmac
import os

from .. import protocol
from ..protocol import Message
from ..errors import AuthenticationError, PymoultTypeError, PymoultValueError

__all__ = ["Handshake", "check_message_token", "resolve_token"]


def resolve_token(token: str | None,
                  token_file: str | os.PathLike[str] | None) -> str | None:
    """The listener's token: ``token``, else the file's, else ``$PYMOULT_TOKEN``'s (which is
    then removed from the environment, so that the application's children do not inherit it),
    else None; surrounding whitespace stripped, at least ``protocol.MIN_TOKEN_BYTES`` bytes."""
    if token is not None and token_file is not None:
        raise PymoultValueError("give token or token_file, not both")
    if token is not None:
        if not isinstance(token, str):
            raise PymoultTypeError(f"token must be a string, got {type(token).__name__}")
        if not token:
            raise PymoultValueError("token must not be empty")
        return protocol.check_token(token, "token=")
    if token_file is not None:
        return protocol.read_token_file(token_file)
    value = os.environ.pop("PYMOULT_TOKEN", None)
    if not value:
        return None
    return protocol.check_token(value, "PYMOULT_TOKEN")


def check_message_token(message: Message, token: bytes | None) -> None:
    """``AuthenticationError`` unless ``message`` (a decoded frame) carries ``token`` (bytes;
    None: no token needed): protocol 1, the named pipe's, whose token travels in the frame."""
    if token is None:
        return
    given = message.get("token")
    if given is None:
        raise AuthenticationError("authentication failed: this listener needs a token")
    if not isinstance(given, str):
        raise AuthenticationError("authentication failed: the token must be a string")
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token):
        raise AuthenticationError("authentication failed: wrong token")


class Handshake:
    """The listener's side of protocol 2 on one connection, frame by frame.

    ``token`` is the listener's (None: a Unix socket listener without one, whose peer's uid
    was checked instead). Feed it the connection's frames in order: :meth:`first` (the hello,
    or a protocol 1 request when no token is needed), :meth:`check_proof` when
    :attr:`needs_proof`, :meth:`check_request`; then :meth:`sign` the reply.
    """

    __slots__ = ("token", "session", "request_mac")

    def __init__(self, token: str | None) -> None:
        self.token = token
        #: the protocol.Session, once a hello came with a token to prove
        self.session: protocol.Session | None = None
        #: what the client's proof says the request's MAC is (any JSON: checked when used)
        self.request_mac: object = None

    def first(self, message: Message) -> bytes | None:
        """The connection's first frame, decoded. Returns the challenge to send (bytes of a
        frame) for a hello; None for a request that needs no authentication (no token: then
        ``message`` is the request)."""
        if message.get("op") != "hello":
            if self.token is None:
                return None
            if "token" in message:
                raise AuthenticationError("authentication failed: this listener takes no token "
                                          "in a request, only protocol 2's challenge-response "
                                          "(a client that sends its token is out of date)")
            raise AuthenticationError("authentication failed: this listener needs a token")
        client_nonce = protocol.read_hello(message)
        if self.token is not None:
            self.session = protocol.Session(self.token, client_nonce,
                                            os.urandom(protocol.NONCE_BYTES))
        return protocol.encode_frame(protocol.challenge(self.session))

    @property
    def needs_proof(self) -> bool:
        """True once a hello asked for a challenge the client must answer with its proof."""
        return self.session is not None

    def check_proof(self, message: Message) -> None:
        """Check the client's proof (decoded frame) and keep the MAC it gives the request."""
        if self.session is None:  # no hello asked for a challenge: there is nothing to prove
            raise AuthenticationError("authentication failed: a proof without a challenge")
        if not protocol.Session.matches(self.session.client_proof(), message.get("proof")):
            raise AuthenticationError("authentication failed: wrong token")
        self.request_mac = message.get("request_mac")

    def check_request(self, payload: bytes) -> None:
        """Check the request's payload (bytes) against the MAC sent with the proof."""
        if self.session is not None and not protocol.Session.matches(
                self.session.request_mac(payload), self.request_mac):
            raise AuthenticationError("authentication failed: the request does not match the "
                                      "MAC sent with the proof (changed on the way?)")

    def sign(self, frame: bytes) -> bytes:

        """The frame that follows reply ``frame`` (bytes) so that the client can trust it: its
        MAC, which no impostor can forge (empty when there is no session)."""
        if self.session is None:
            return b""
        return protocol.encode_frame({"mac": self.session.reply_mac(frame[4:])})
