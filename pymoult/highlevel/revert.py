"""Undoing an update after it was applied: :class:`RevertUpdate`.

An applied update's journal keeps what it changed (``pymoult.lowlevel.journal``) for as long
as the update object lives. ``RevertUpdate(update)`` is an update of its own that undoes it
through that journal: queued to a manager like any other, it waits for alterability as a plain
:class:`~pymoult.highlevel.updates.Update` does (its threads, the original's unless given, else
the manager's, suspended at update points or anywhere, as the original's ``suspension`` says),
then, inside its apply window, undoes the original's operations newest first. The original ends
*reverted* and ``isApplied`` no longer counts it.

Only the newest update may be reverted: an update applied after it (and not reverted) may
build on what it changed, so the revert is refused, changing nothing, with their names (revert
them first, newest first). So is a revert of an update no longer applied. When some operation
cannot be undone, the others are; the original then ends *partially rolled back*, and so does
the revert, its error saying what stayed. A revert cannot itself be undone: it records in its
own journal one operation that says so, so that a failure after it never reads "rolled back".

What a revert guarantees to the application's callers: as a ``SafeRedefineUpdate`` waits for
the function it replaces, a revert waits (its threads suspended) until no thread runs the code
the update put in place, the functions whose code it swapped (their new code), checked again
inside the apply window; so a call that began on the update's version ends on it. It also
applies ``ModuleUpdate``'s guard against torn calls: when it swaps back the code of several
functions, it waits while a frame that names two of them (``decode(encode(x))``), or runs one
and names another, is on a thread's stack, unless that thread is parked at one of its update
points: that caller could have called the update's ``encode`` and be about to call the old
``decode``. What the update changed otherwise (a class attribute, an object) is put back at
once.
"""

from __future__ import annotations

import logging
import threading
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from ..errors import (NotAlterableNow, PymoultTypeError, RevertError, RollbackError,
                      UpdateDefinitionError)
from .._stacks import running_code
from ..lowlevel import alterability
from ..lowlevel.journal import Operation
from ..lowlevel.relinking import SwapFunction
from .lifecycle import Update, UpdateState, applied_after

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .lifecycle import Patience

__all__ = ["RevertUpdate", "Reverted"]

logger = logging.getLogger("pymoult")


class Reverted(Operation):
    """What a revert did, recorded in its own journal: the original's operations it undid. A
    revert cannot be redone, so undoing this raises ``RollbackError``, naming what stays."""

    def __init__(self, update: Update, undone: int,
                 failures: Iterable[tuple[Operation, BaseException]] = ()) -> None:
        self.update = update
        done = f"{undone} operations of {update.name!r} undone"
        failures = list(failures)
        if failures:
            done += "; could not undo " + "; ".join(f"{op} ({error!r})" for op, error in failures)
        self.text = f"revert ({done})"

    def undo(self) -> NoReturn:
        raise RollbackError("a revert cannot be redone")


class RevertUpdate(Update):
    """Undo ``update``, an applied update, through its journal, at a safe point (see the
    module notes). ``threads`` (default: the original's) and the patience keywords are those
    of :class:`~pymoult.highlevel.updates.Update`."""

    def __init__(self, update: Update, name: str | None = None,
                 threads: Iterable[threading.Thread] | None = None,
                 **patience: Unpack[Patience]) -> None:
        if not isinstance(update, Update):
            raise PymoultTypeError(f"RevertUpdate takes an applied Update, got {update!r}")
        if update.is_revert:
            raise UpdateDefinitionError(f"a revert cannot be reverted ({update.name!r}): apply "
                                        "the update it undid again instead")
        if update.state is not UpdateState.APPLIED:
            raise UpdateDefinitionError(f"only an applied update can be reverted: "
                                        f"{update.name!r} is {update.state.value}")
        super().__init__(name or f"revert {update.name}",
                         update.threads if threads is None else threads, **patience)
        self.update = update
        self.suspension = update.suspension

    #: A revert is left out of the order :func:`~pymoult.highlevel.updates.applied_after`
    #: tells: it leaves the program as it was before the update it undoes.
    is_revert = True

    def watched(self) -> list[types.ModuleType | type]:
        """None: a revert changes the program only through the original's journal."""
        return []

    def installed_codes(self) -> list[types.CodeType]:
        """The code objects the update put in place (the new code of each function whose code
        it swapped): what must run in no thread when the revert applies."""
        return [op.after["__code__"] for op in self.update.journal
                if isinstance(op, SwapFunction)]

    @property
    def torn_guard(self) -> alterability.TornCallGuard:
        """The guard against torn calls over the functions the revert swaps back (built once:
        the original's journal does not change while it is applied)."""
        guard = self.__dict__.get("_torn_guard")
        if guard is None:
            guard = self.__dict__["_torn_guard"] = alterability.TornCallGuard(
                self.installed_codes())
        return guard

    def torn_caller(self) -> types.CodeType | None:
        """The code of a frame that could see both versions if the revert applied now (see
        the module notes), or None. Threads parked at their update points are left out."""
        if not self.torn_guard:
            return None
        return running_code((), alterability.stacks_not_at_points(), self.torn_guard)

    def check_alterability(self) -> bool:
        codes = self.installed_codes()
        if not codes:
            return super().check_alterability()
        if not alterability.checkQuiescenceOfFunctions(
                codes, self.suspended_threads(), anywhere=self.suspension == "anywhere"):
            return False
        if self.torn_caller() is None:
            return True
        self.clean_failed_alterability()  # let the threads move on before the next try
        return False

    def wait_alterability(self) -> bool:
        codes = self.installed_codes()
        if not codes:
            return super().wait_alterability()

        def unsafe() -> types.CodeType | None:
            return running_code(codes, None) or self.torn_caller()

        with alterability.patience(self.max_tries, self.sleep_time):
            return alterability.wait_quiescence(
                codes, self.suspended_threads(), self.timeout,
                anywhere=self.suspension == "anywhere", unsafe=unsafe)

    def why_not_alterable(self) -> str:
        reasons = [super().why_not_alterable()]
        reasons += [f"{function} still running in thread {thread!r}" for thread, function
                    in alterability.runningFunctions(self.installed_codes())]
        torn = self.torn_caller()
        if torn is not None:
            reasons.append(self.torn_guard.reason(torn, "the revert changes together"))
        return "; ".join(reason for reason in reasons if reason)

    def apply(self) -> None:

        update = self.update
        if update.state is not UpdateState.APPLIED:
            raise RevertError(f"cannot revert {update.name!r}: it is {update.state.value}, "
                              "no longer applied")
        newer = applied_after(update)
        if newer is None:
            raise RevertError(f"cannot revert {update.name!r}: too many updates were applied "
                              "after it to tell which build on it")
        if newer:
            names = ", ".join(repr(name) for name in newer)
            raise RevertError(f"cannot revert {update.name!r}: {names} applied after it may "
                              f"build on it; revert {'it' if len(newer) == 1 else 'them'} "
                              "first, newest first")
        running = alterability.runningFunctions(self.installed_codes())
        if running:  # a thread not held entered one after the check
            thread, function = running[0]
            raise NotAlterableNow(f"{function} started running in thread {thread!r} after the "
                                  "quiescence check")
        torn = self.torn_caller()
        if torn is not None:
            raise NotAlterableNow(f"{self.torn_guard.reason(torn, 'the revert changes together')}"
                                  ": it started between the check and the apply")
        operations = len(update.journal)
        try:
            update.journal.rollback()
        except RollbackError as exc:
            failures = exc.failures
            self.journal.record(Reverted(update, operations - len(failures), failures))
            update.state = UpdateState.PARTIALLY_ROLLED_BACK
            raise RevertError(f"{update.name!r} was only partly reverted: {exc}") from exc
        self.journal.record(Reverted(update, operations))
        update.state = UpdateState.REVERTED
        logger.info("reverted %r (%d operations undone)", update.name, operations)
