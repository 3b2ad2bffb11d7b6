"""Rolling back what pushes applied: a listener's ``rollback`` request.

A listener remembers the updates its last pushes applied (:class:`AppliedPushes`), with the
manager that applied each, so that a client can ask for them to be reverted (``pymoult
rollback``, or a fleet rollout that halts): :func:`rollback` reverts them newest first, each by
a ``RevertUpdate`` queued to that manager, which undoes the update through its journal at a
safe point (``pymoult.highlevel.revert`` says what that guarantees and when it is refused).
It stops at the first revert that does not end reverted: the older ones stay applied, and the
reply names them.

What is remembered stays in memory until later pushes push it out: an update's journal holds
what it replaced (old code, and for a conversion the state of every object converted).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import RevertError
from ..highlevel.revert import RevertUpdate
from ..highlevel.lifecycle import UpdateState
from .scripts import update_outcome, wait_unless

if TYPE_CHECKING:
    from ..highlevel.lifecycle import Update
    from ..highlevel.managers import Manager, UpdateFuture
    from ..protocol import Message

    #: (order applied, update, its manager)
    _Applied = tuple[int, Update, Manager]

__all__ = ["AppliedPushes", "rollback"]

logger = logging.getLogger("pymoult")

_rollback_numbers = itertools.count(1)


class AppliedPushes:
    """The updates applied by the last ``keep`` pushes that applied any, each with its
    manager, in the order they were applied."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        #: [[(order, update, manager)...]...], oldest first
        self._pushes: collections.deque[list[_Applied]] = collections.deque()
        self._order = itertools.count()
        self._lock = threading.Lock()

    def recorder(self) -> Callable[[Update, UpdateFuture], None]:
        """A callback for one push: ``record(update, future)`` as each update is applied."""
        push: list[_Applied] = []

        def record(update: Update, future: UpdateFuture) -> None:
            manager = future.manager
            if manager is None:
                return
            with self._lock:
                if not push:
                    self._pushes.append(push)
                    while len(self._pushes) > self.keep:
                        self._pushes.popleft()
                push.append((next(self._order), update, manager))

        return record

    def select(self, names: Iterable[str] | None = None) -> list[tuple[Update, Manager]]:
        """``(update, manager)`` pairs to revert, newest first: the still applied updates of
        the last push that has any (``names`` None), else the newest still applied update of
        each name. ``RevertError`` names what is not there."""
        with self._lock:
            pushes = [list(push) for push in self._pushes]
        applied = [[entry for entry in push if entry[1].state is UpdateState.APPLIED]
                   for push in pushes]
        chosen: list[_Applied] | None
        if names is None:
            chosen = next((push for push in reversed(applied) if push), None)
            if chosen is None:
                raise RevertError(f"nothing to roll back: no update applied by the last "
                                  f"{self.keep} pushes is still applied")
        else:
            newest: dict[str, _Applied] = {}
            for entry in (entry for push in applied for entry in push):
                newest[entry[1].name] = entry  # later ones replace earlier ones
            names = list(names)
            missing = [name for name in dict.fromkeys(names) if name not in newest]
            if missing:
                raise RevertError(
                    f"nothing to roll back by the name{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(map(repr, missing))}: the listener can revert only updates "
                    f"applied by its last {self.keep} pushes and still applied")
            chosen = [newest[name] for name in dict.fromkeys(names)]
        return [(update, manager) for _, update, manager in sorted(chosen, reverse=True,
                                                                   key=lambda e: e[0])]


def rollback(applied: AppliedPushes, names: Iterable[str] | None = None,
             timeout: float | None = None, abandoned: Callable[[], object] | None = None,
             origin: str | None = None) -> Message | None:
    """Revert the updates ``applied.select(names)`` gives, newest first, and return the reply
    (None when ``abandoned()`` answered true while waiting: the reverts go on). ``timeout``
    bounds the whole; a revert not ended in time is reported unfinished and the older ones are
    not tried. ``not_reverted`` names the updates not (fully) reverted, the first one's revert
    failed or unfinished."""
    chosen = applied.select(names)
    number = next(_rollback_numbers)
    who = "" if origin is None else f" (asked by {origin})"
    logger.info("rollback %d%s: reverting %s", number, who,
                ", ".join(repr(update.name) for update, _ in chosen))
    deadline = None if timeout is None else time.monotonic() + timeout
    outcomes: list[Message] = []
    not_reverted: list[str] = []
    for index, (update, manager) in enumerate(chosen):
        revert = RevertUpdate(update)
        future = manager.add_update(revert)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ended = wait_unless(done, left, abandoned)
        if ended is None:
            return None
        outcome = update_outcome(revert, future, None if ended else
                                 f"not finished within {timeout} s")
        outcomes.append(outcome)
        if not (ended and outcome["state"] == UpdateState.APPLIED.value
                and outcome["error"] is None):
            not_reverted = [u.name for u, _ in chosen[index:]]
            break
    reply: Message = {"ok": not not_reverted,
 "script_error": None, "updates": outcomes,
             "not_reverted": not_reverted}
    summary = "; ".join(f"{o['name']!r}: {o['state']}" + (f" ({o['error']})" if o["error"]
                                                           else "") for o in outcomes)
    if reply["ok"]:
        logger.info("rollback %d%s: %s", number, who, summary)
    else:
        logger.warning("rollback %d%s: %s; still applied: %s", number, who, summary,
                       ", ".join(map(repr, not_reverted)))
    return reply
