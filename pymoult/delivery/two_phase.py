"""Two-phase pushes: every process prepared, then all committed within one short window.

A two-phase push runs its script as a push does, but each update the script queues is *gated*:
it goes through its setup and waits for alterability as usual, then, with its threads held,
stops at the gate (its ``pause_hook``), prepared, instead of applying. The listener answers the
push once every update is prepared, with a transaction id; if one fails to prepare instead, the
others are released to roll back and the reply says what happened. ``commit`` releases the
gates: each update applies at once (its threads are already held), and the reply gives each
one's outcome and the wall-clock time it was applied, from which a coordinator measures how far
apart the processes switched. ``abort`` releases them to roll back, having changed nothing (their
setup is undone).

A prepared update holds its threads until the decision, so the decision has a deadline: a
transaction not decided within ``hold`` seconds of its first update being prepared decides
itself to abort, so that a coordinator that vanished (or a partition) never leaves the
application held for long. A commit that arrives later finds it expired and says so.

One update per manager: a manager applies its updates one at a time, so a second one could not
be prepared while the first holds; the script's second ``add_update`` to one manager raises
``TwoPhaseError`` (``ModuleUpdate.together`` makes several modules' changes one update).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from ..errors import TwoPhaseError
from ..protocol import DEFAULT_HOLD
from .scripts import WATCH_INTERVAL

if TYPE_CHECKING:
    from ..highlevel.lifecycle import Update
    from ..highlevel.managers import UpdateFuture

__all__ = ["Transaction", "COMMIT", "ABORT", "EXPIRED"]

#: A transaction's decision: commit, abort, or expired (not decided within its hold).
Decision = Literal["commit", "abort", "expired"]
COMMIT: Literal["commit"] = "commit"
ABORT: Literal["abort"] = "abort"
EXPIRED: Literal["expired"] = "expired"


class _Gate:
    """An update's ``pause_hook`` in a transaction: runs the update's own hook, says the update
    is prepared, then waits for the transaction's decision; anything but a commit raises, and
    the manager rolls the update back."""

    def __init__(self, transaction: Transaction, update: Update) -> None:
        self.transaction, self.update = transaction, update
        self.own_hook = update.pause_hook
        self.prepared = False

    def __call__(self) -> None:
        self.own_hook()
        decision = self.transaction.prepared(self)
        if decision == EXPIRED:
            raise TwoPhaseError(f"{self.update.name!r} was prepared but not committed within "
                                f"{self.transaction.hold:g} s: rolled back")
        if decision != COMMIT:
            raise TwoPhaseError(f"{self.update.name!r} was prepared, then aborted")


class Transaction:
    """The updates one two-phase push queued, their gates and the decision."""

    def __init__(self, hold: float = DEFAULT_HOLD) -> None:
        self.id = secrets.token_hex(8)
        self.hold = hold
        self.pairs: list[tuple[Update, UpdateFuture]] = []  # in the order queued
        self.decision: Decision | None = None
        self._gates: list[_Gate] = []
        self._managers: set[int] = set()
        self._changed = threading.Condition()
        self._first_prepared: float | None = None

    def before_queued(self, update: Update, future: UpdateFuture) -> None:
        """``collect_updates``'s hook: gate ``update`` before its manager can start it."""
        manager = future.manager
        if id(manager) in self._managers:
            name = None if manager is None else manager.name
            raise TwoPhaseError(f"a two-phase push takes one update per manager, and "
                                f"{update.name!r} is a second one for {name!r} (it "
                                "could not be prepared while the first holds its threads; "
                                "ModuleUpdate.together makes one update of several modules)")
        self._managers.add(id(manager))
        gate = _Gate(self, update)
        update.pause_hook = gate  # type: ignore[method-assign]  # this update's hook only
        self._gates.append(gate)
        self.pairs.append((update, future))
        future.add_done_callback(lambda _: self._notify())

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def prepared(self, gate: _Gate) -> Decision:
        """Called by ``gate`` (in its manager's thread, threads held): wait for the decision
        and return it."""
        with self._changed:
            gate.prepared = True
            if self._first_prepared is None:
                self._first_prepared = time.monotonic()
            self._changed.notify_all()
            deadline = self._first_prepared + self.hold
            decision = self.decision
            while decision is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.decision = decision = EXPIRED
                    self._changed.notify_all()
                    break
                self._changed.wait(left)
                decision = self.decision
            return decision

    def decide(self, decision: Decision) -> Decision:
        """Commit or abort (``COMMIT``, ``ABORT``); returns the decision in force, which is an
        earlier one (an expiry included) when there was one."""
        with self._changed:
            if self.decision is None:
                self.decision = decision
                self._changed.notify_all()
            return self.decision

    def _wait(self, predicate: Callable[[], bool], timeout: float | None,
              abandoned: Callable[[], object] | None) -> bool | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not predicate():
                if abandoned is not None and abandoned():
                    return None
                left = WATCH_INTERVAL if deadline is None else min(
                    WATCH_INTERVAL, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait_prepared(self, timeout: float | None = None,
                      abandoned: Callable[[], object] | None = None) -> bool | None:
        """True once every update is prepared; False when one ended first (it failed, or the
        transaction was decided), or after ``timeout`` s; None when ``abandoned()`` answered
        true."""
        def settled() -> bool:
            return (any(future.done() for _, future in self.pairs)
                    or self.decision is not None
                    or all(gate.prepared for gate in self._gates))

        ended = self._wait(settled, timeout, abandoned)
        if not ended:
            return ended
        return self.decision is None and all(gate.prepared for gate in self._gates) \
            and not any(future.done() for _, future in self.pairs)

    def wait_finished(self, timeout: float | None = None,
                      abandoned: Callable[[], object] | None = None) -> bool | None:
        """True once every update has ended; False after ``timeout`` s; None when
        ``abandoned()`` answered true."""
        return self._wait(lambda: all(future.done() for _, future in self.pairs), timeout,
                          abandoned)

    @property
    def decided(self) -> bool:

        """True once the transaction is committed, aborted or expired."""
        return self.decision is not None
