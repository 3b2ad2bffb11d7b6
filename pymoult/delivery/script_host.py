"""What both listeners share: their token and limits, the record of the updates applied through
them, how they hand a push to the script runner, and which one the application started last.

:class:`ScriptHost` is the base of ``Listener`` (``pymoult.delivery.socket_server``) and
``PipeListener`` (``pymoult.delivery.pipe_server``); :func:`get_app_listener` is the original
Pymoult's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Literal, overload

from ..errors import PymoultTypeError, PymoultValueError, TwoPhaseError
from ..highlevel.lifecycle import UpdateState
from .authentication import check_message_token, resolve_token
from .reverts import AppliedPushes, rollback
from .scripts import run_script, update_outcome
from ..protocol import Message
from .two_phase import ABORT, COMMIT, Transaction

__all__ = ["ScriptHost", "check_positive", "get_app_listener"]

_app_listener: ScriptHost | None = None
_app_listener_lock = threading.Lock()


def get_app_listener() -> ScriptHost | None:
    """The listener the application started last (None if none is running)."""
    return _app_listener


@overload
def check_positive(value: object, what: str, integer: Literal[True],
                   allow_none: Literal[False] = False) -> int: ...


@overload
def check_positive(value: object, what: str, integer: Literal[False] = False,
                   allow_none: Literal[False] = False) -> float: ...


@overload
def check_positive(value: object, what: str, integer: bool = False, *,
                   allow_none: Literal[True]) -> float | None: ...


def check_positive(value: object, what: str, integer: bool = False,
                   allow_none: bool = False) -> float | None:
    """``value`` if it is a positive finite number (an int when ``integer``; None too when
    ``allow_none``), else a ``PymoultTypeError``/``PymoultValueError`` naming ``what``."""
    if value is None and allow_none:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise PymoultTypeError(f"{what} must be a positive {'int' if integer else 'number'}, "
                               f"got {value!r}")
    if not value > 0 or value == float("inf"):
        raise PymoultValueError(f"{what} must be positive and finite, got {value!r}")
    return value


class RecentNames(list[str]):
    """``applied_updates``: a list that keeps the last ``host.history_size`` names appended."""

    def __init__(self, host: ScriptHost) -> None:
        super().__init__()
        self._host = host

    def append(self, name: str) -> None:
        super().append(name)
        self._host.applied_total += 1
        excess = len(self) - max(0, int(self._host.history_size))
        if excess > 0:
            del self[:excess]


class ScriptHost:
    """Token, limits and push handling shared by Listener and PipeListener."""

    #: How many names ``applied_updates`` keeps (the most recent).
    history_size = 500

    #: The longest a push may hold its connection (and one of ``max_connections``): a push
    #: asking for no timeout, or a longer one, gets this one. Updates still running then are
    #: reported "not finished" and go on; ``status`` tells how they end.
    max_push_wait = 600.0

    #: How many of the last pushes that applied updates a ``rollback`` request can revert
    #: (their updates' journals, and what they hold, stay in memory until then).
    revertible_pushes = 4

    read_timeout: float
    max_size: int
    idle_timeout: float | None
    applied_updates: RecentNames
    applied_total: int
    _token: str | None
    _token_bytes: bytes | None
    _applied_pushes: AppliedPushes
    _transactions: dict[str, Transaction]
    _transactions_lock: threading.Lock

    def _setup(self, token: str | None, token_file: str | os.PathLike[str] | None,
               max_size: int, read_timeout: float, idle_timeout: float | None) -> None:
        self.read_timeout = float(check_positive(read_timeout, "read_timeout"))
        self._token = resolve_token(token, token_file)
        self._token_bytes = None if self._token is None else self._token.encode("utf-8")
        self.max_size = check_positive(max_size, "max_size", integer=True)
        if self.max_size > 0xFFFFFFFF:
            raise PymoultValueError(f"max_size must be at most {0xFFFFFFFF} bytes (a frame's "
                                    f"length is 4 bytes), got {max_size!r}")
        self.idle_timeout = check_positive(idle_timeout, "idle_timeout", allow_none=True)
        #: Names of the updates applied through this listener, in the order they were applied:
        #: the last ``history_size`` (``applied_total`` counts them all).
        self.applied_updates = RecentNames(self)
        self.applied_total = 0
        self._applied_pushes = AppliedPushes(self.revertible_pushes)
        self._transactions = {}  # id -> Transaction, prepared and not yet decided by a client
        self._transactions_lock = threading.Lock()

    @property
    def requires_token(self) -> bool:
        """True when clients must prove they know the listener's token."""
        return self._token is not None

    def _authenticate(self, message: Message) -> None:
        """``AuthenticationError`` unless ``message`` carries the token (when there is one): the
        named pipe's protocol 1, which has no way back for a challenge."""
        check_message_token(message, self._token_bytes)

    def _push(self, request: Message, abandoned: Callable[[], object] | None = None,
              origin: str | None = None) -> Message | None:
        timeout = request["timeout"]
        timeout = self.max_push_wait if timeout is None else min(timeout, self.max_push_wait)
        if request.get("two_phase"):
            return self._prepare(request, timeout, abandoned, origin)
        return run_script(request["script"], request["wait"], timeout,
                          self.applied_updates.append, abandoned, origin=origin,
                          on_applied_update=self._applied_pushes.recorder())

    def _prepare(self, request: Message, timeout: float,
                 abandoned: Callable[[], object] | None, origin: str | None) -> Message | None:
        """A two-phase push (``pymoult.delivery.two_phase``): the reply once every update the
        script queued is prepared (``"transaction"``: its id), or once that failed."""
        transaction = Transaction(request["hold"])
        deadline = time.monotonic() + timeout
        reply = run_script(request["script"], False, timeout, self.applied_updates.append,
                           abandoned, origin=origin,
                           on_applied_update=self._applied_pushes.recorder(),
                           before_queued=transaction.before_queued)
        prepared: bool | None = False
        if reply is not None and reply["script_error"] is None and transaction.pairs:
            prepared = transaction.wait_prepared(max(0.0, deadline - time.monotonic()),
                                                 abandoned)
        if prepared:
            with self._transactions_lock:
                for number in [n for n, t in self._transactions.items() if t.decided]:
                    del self._transactions[number]  # expired while nobody decided
                self._transactions[transaction.id] = transaction
            return {"ok": True, "script_error": None, "transaction": transaction.id,
                    "hold": transaction.hold,
                    "updates": [update_outcome(u, f) for u, f in transaction.pairs]}
        transaction.decide(ABORT)  # the prepared ones roll back
        if reply is None or prepared is None:
            return None  # the client went away; the aborted updates roll back
        finished = transaction.wait_finished(max(0.0, deadline - time.monotonic()), abandoned)
        if finished is None:
            return None
        note = None if finished else f"not finished within {timeout} s"
        reply = dict(reply, ok=False, transaction=None,
                     updates=[update_outcome(u, f, note) for u, f in transaction.pairs])
        if not transaction.pairs and reply["script_error"] is None:
            reply["error"] = "the script queued no update: nothing to prepare"
        return reply

    def _decide(self, request: Message, abandoned: Callable[[], object] | None = None,
                origin: str | None = None) -> Message | None:
        """``commit`` or ``abort`` a prepared transaction; the reply once its updates ended."""
        with self._transactions_lock:
            transaction = self._transactions.pop(request["transaction"], None)
        if transaction is None:
            raise TwoPhaseError(f"no prepared transaction {request['transaction']!r} here: "
                                "never prepared, or already committed or aborted")
        asked = COMMIT if request["op"] == "commit" else ABORT
        decision = transaction.decide(asked)
        timeout = request["timeout"]
        timeout = self.max_push_wait if timeout is None else min(timeout, self.max_push_wait)
        finished = transaction.wait_finished(timeout, abandoned)
        if finished is None:
            return None
        note = None if finished else f"not finished within {timeout} s"
        updates = []
        for update, future in transaction.pairs:
            outcome = update_outcome(update, future, note)
            applied = update.times.get("applied")
            outcome["applied_at"] = None if applied is None or \
                outcome["state"] != UpdateState.APPLIED.value \
                else time.time() - (time.monotonic() - applied)
            updates.append(outcome)
        wanted = UpdateState.APPLIED.value if asked == COMMIT else UpdateState.ROLLED_BACK.value
        ok = decision == asked and all(
            u["finished"] and u["state"] == wanted and (asked == ABORT or u["error"] is None)
            for u in updates)
        return {"ok": ok, "script_error": None, "decision": decision, "updates": updates}

    def _rollback(self, request: Message, abandoned: Callable[[], object] | None = None,
                  origin: str | None = None) -> Message | None:
        timeout = request["timeout"]
        timeout = self.max_push_wait if timeout is None else min(timeout, self.max_push_wait)
        return rollback(self._applied_pushes, request["updates"], timeout, abandoned, origin)

    def _serving(self) -> None:
        """This listener is the application's from now on (``get_app_listener()``)."""
        global _app_listener
        with _app_listener_lock:
            _app_listener = self

    def _not_serving(self) -> None:

        """This listener stops being the application's, if it was."""
        global _app_listener
        with _app_listener_lock:
            if _app_listener is self:
                _app_listener = None
