"""Managers: they queue updates and drive each through its lifecycle.

:class:`Manager` is the polling manager of the original Pymoult: the application calls
:meth:`Manager.apply_next_update` at moments of its choice, and each call advances the current
update by one step (requirements, setup, one alterability try, apply, resume, over, cleanup).

``add_update`` returns a ``concurrent.futures.Future`` that carries the outcome: the update itself
once applied; ``UpdateTimeoutError`` when alterability was not reached within its patience;
``UpdateAbortedError`` when it was abandoned; the exception ``apply`` raised, after the update's
journal has rolled back everything it changed and the threads were released on the old version
(state "rolled back"), or ``PartialRollbackError`` (state "partially rolled back", ``.residue``
saying what stayed, the exception ``apply`` raised as its cause) when some of it could not be;
``UpdateStepError`` when a step after apply failed (the update stays applied). A failing update
never stops the manager: it goes on with the next one.

``apply`` runs with the update's journal recording and inside a stop-the-world window, after the
update's threads have parked, so no thread sees part of an update.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sortedcontainers import SortedKeyList

from ..errors import (DeadlockDetectedError, PartialRollbackError, PymoultError,
                      PymoultTypeError, RollbackError, UpdateAbortedError, UpdateStepError,
                      UpdateTimeoutError)
from .._cpython import set_switch_interval
from .._parking import check_timeout, open_handoff
from .._stacks import forget_stacks
from ..errors import NotAlterableNow, ThreadStateError
from ..lowlevel.journal import Journal
from ..lowlevel.world import stop_the_world
from ..errors import UpdateDefinitionError
from ..lowlevel import alterability
from .lifecycle import Update, UpdateState, UpdateStatus, check_definition, has_setup

if TYPE_CHECKING:
    from .._parking import Handoff
    from ..lowlevel.alterability import ForceQuiescenceWatcher

__all__ = ["Manager", "ThreadedManager", "UpdateFuture", "fetch_manager",
           "generatePreconfiguredManager", "collect_updates", "live_managers", "ManagerStatus",
           "QueuedUpdate"]

logger = logging.getLogger("pymoult")

_U = TypeVar("_U", bound=Update)
_M = TypeVar("_M", bound="Manager")
#: An update's lifecycle, one step per ``next()`` (see ``Manager._steps``).
_Steps = Generator[None, None, None]

_managers: weakref.WeakValueDictionary[str, Manager] = weakref.WeakValueDictionary()
_managers_lock = threading.Lock()
_local = threading.local()  # in_steps: this thread is running an update's steps;
#                              collected: (update, future) list of collect_updates()

#: The window apply runs in (seconds of guaranteed exclusion; see pymoult.lowlevel.world).
APPLY_GUARANTEE = 0.05
_REQUIREMENT_RECHECK = 0.05
#: Longest back-off (seconds) before a postponed update is tried again: its ``sleep_time``
#: doubles at each postponement up to this.
MAX_BACK_OFF = 1.0


def fetch_manager(name: str) -> Manager | None:
    """The live manager called ``name``, or None (update scripts use it to reach the app's)."""
    return _managers.get(name)


def live_managers() -> list[Manager]:
    """Every live manager, in the order they were created (the Listener's status reports them)."""
    with _managers_lock:
        return list(_managers.values())


#: ``before_queued(update, future)`` of :func:`collect_updates`
BeforeQueued = Callable[[Update, "UpdateFuture"], object]


@contextlib.contextmanager
def collect_updates(before_queued: BeforeQueued | None = None
                    ) -> Iterator[list[tuple[Update, UpdateFuture]]]:
    """Within the block, every update the *calling thread* adds to any manager is appended,
    as an ``(update, future)`` pair, to the list this yields (the Listener uses it to report
    the outcome of the updates a script queued). Blocks nest: the inner one collects.

    ``before_queued(update, future)``, if given, is called for each of them before the update
    is queued, so before its manager can start it; what it raises is raised by ``add_update``,
    and the update is not queued."""
    outer = getattr(_local, "collected", None)
    collected: list[tuple[Update, UpdateFuture]] = []
    _local.collected = (collected, before_queued)
    try:
        yield collected
    finally:
        _local.collected = outer


def _refuse_cycle(update: Update, requires: Iterable[Update]) -> None:
    """``UpdateDefinitionError`` if ``update`` would (indirectly) require itself."""
    todo, seen = list(requires), set()
    while todo:
        required = todo.pop()
        if required is update:
            raise UpdateDefinitionError(f"{update.name!r} would require itself (a requirement "
                                        "cycle): it could never run")
        if id(required) not in seen:
            seen.add(id(required))
            todo.extend(getattr(required, "requires", ()))


class UpdateFuture(Future[Update]):
    """The ``concurrent.futures.Future`` of an update's outcome, as ``add_update`` returns it.

    ``result()`` and ``exception()`` on an update not finished yet raise
    ``DeadlockDetectedError`` at once, instead of waiting for ever, when the calling thread is
    one the update needs suspended, the manager's own thread, or a thread running an update's
    steps (as the second seed's runtime detects a deadlock before it happens).
    """

    def __init__(self, manager: Manager, update: Update) -> None:
        super().__init__()
        self._manager = weakref.ref(manager)
        self._update = update

    @property
    def manager(self) -> Manager | None:
        """The manager the update was added to (None once that manager is gone)."""
        return self._manager()

    def _refuse_deadlock(self, call: str) -> None:
        manager = self._manager()
        if manager is not None and not self.done():
            reason = manager._deadlock(self._update, call)
            if reason is not None:
                raise DeadlockDetectedError(reason)

    def result(self, timeout: float | None = None) -> Update:
        self._refuse_deadlock("result()")
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._refuse_deadlock("exception()")
        return super().exception(timeout)


def _patience_text(update: Update) -> str:
    if update.timeout is not None:
        return f"timeout {update.timeout:g} s"
    return f"{update.max_tries} tries, {update.sleep_time:g} s apart"


def _roll_back(update: Update) -> list[str]:
    """Roll back ``update``'s journal; returns what stayed (empty when everything was undone)."""
    try:
        update.journal.rollback()
    except RollbackError as exc:
        return [f"could not undo {operation} ({error!r})" for operation, error in exc.failures]
    return []


def _why_not_alterable(update: Update) -> str:
    try:
        why = update.why_not_alterable()
    except Exception:  # a message must not fail the manager
        logger.exception("why_not_alterable of %r failed", update)
        return ""
    return f": {why}" if why else ""


class _Entry:
    __slots__ = ("update", "future", "priority", "seq", "not_before", "requires", "request",
                 "watchers")

    def __init__(self, update: Update, future: UpdateFuture, priority: int, seq: int,
                 requires: Iterable[Update] = ()) -> None:
        self.update, self.future, self.priority, self.seq = update, future, priority, seq
        self.not_before = 0.0  # a postponed update waits for its back-off
        self.requires = tuple(requires)  # updates that must be applied first
        #: "abort" or "postpone", asked while the manager thread runs it
        self.request: Literal["abort", "postpone"] | None = None
        #: forced-quiescence gates its steps set up (released at its end)
        self.watchers: list[ForceQuiescenceWatcher] = []

    def release_watchers(self, manager_name: str) -> None:
        """Release the callers still held at gates the update's steps set up and left."""
        for watcher in self.watchers:
            if not watcher.can_continue.is_set():
                logger.warning("%s: %r left the callers of %s held by forced quiescence; "
                               "released", manager_name, self.update, watcher.name)
                watcher.release()
        self.watchers = []


def _queue_order(entry: _Entry) -> tuple[int, int]:
    return entry.priority, entry.seq


class UpdateRecord:
    """What the history keeps of a finished update: name, final state, when each step ended
    (seconds after it was added), how long threads were held, the error if any, and the
    journal's operations as text."""

    __slots__ = ("name", "state", "steps", "pause", "error", "operations")

    def __init__(self, update: Update, added: float) -> None:
        self.name = update.name
        self.state = update.state.value
        self.steps = {step: at - added for step, at in update.times.items()}
        self.pause = update.pause
        self.error = None if update.error is None else repr(update.error)
        self.operations = [str(op) for op in update.journal]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"<UpdateRecord {self.name!r} {self.state} operations={len(self.operations)}>"


@dataclasses.dataclass(frozen=True)
class QueuedUpdate:
    """An update waiting in a manager's queue, in a :class:`ManagerStatus`."""

    name: str
    state: str


@dataclasses.dataclass(frozen=True)
class ManagerStatus:
    """A snapshot of a manager (:meth:`Manager.status`), as ``pymoult status`` shows it: its
    ``name``, ``kind`` (class name), ``current`` update (an ``UpdateStatus``, or None), the
    updates ``pending`` in its queue in the order they will run, and its ``statistics()``
    (a read-only mapping)."""

    name: str
    kind: str
    current: UpdateStatus | None
    pending: tuple[QueuedUpdate, ...]
    statistics: types.MappingProxyType[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values."""
        return {"name": self.name, "kind": self.kind,
                "current": None if self.current is None else self.current.as_dict(),
                "pending": [{"name": q.name, "state": q.state} for q in self.pending],
                "statistics": dict(self.statistics)}


class Manager:
    """A polling manager: updates advance one step per :meth:`apply_next_update` call.

    ``threads`` are given to updates that name none. Updates are applied one at a time, in
    priority order (lower first), then in the order they were added.
    """

    def __init__(self, name: str | None = None,
                 threads: Iterable[threading.Thread] | None = None) -> None:
        self.name: str = name or f"{type(self).__name__}-{id(self):x}"
        self.threads: list[threading.Thread] = list(threads or [])
        self._queue = SortedKeyList(key=_queue_order)
        self._seq = itertools.count()
        self._lock = threading.RLock()
        #: (entry, lifecycle generator; None for a threaded manager, whose thread runs it)
        self._current: tuple[_Entry, _Steps | None] | None = None
        self._history: collections.deque[UpdateRecord] = collections.deque()
        #: final state -> count of the records dropped from the history
        self._forgotten: dict[str, int] = {}
        with _managers_lock:
            _managers[self.name] = self

    # -- submitting ----------------------------------------------------------------------------

    def add_update(self, update: Update, priority: int = 0,
                   requires: Iterable[Update] = ()) -> UpdateFuture:
        """Queue ``update``; returns the Future of its outcome (see the module notes).

        ``requires`` lists updates that must be applied first; if one of them ends without
        being applied, this one is aborted. Raises ``UpdateDefinitionError`` at once for an
        update that cannot run.
        """
        check_definition(update)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise PymoultTypeError(f"priority must be an int, got {priority!r}")
        requires = tuple(requires)
        for required in requires:
            if not isinstance(required, Update):
                raise PymoultTypeError(f"requires lists updates, got {required!r}")
            if required is update:
                raise UpdateDefinitionError(f"{update.name!r} cannot require itself")
        _refuse_cycle(update, requires)
        update.requires = requires
        if not update.threads:
            update.threads = list(self.threads)
        future = UpdateFuture(self, update)
        collecting = getattr(_local, "collected", None)
        if collecting is not None:
            collected, before_queued = collecting
            if before_queued is not None:
                before_queued(update, future)
            collected.append((update, future))
        update.mark("added")
        with self._lock:
            self._queue.add(_Entry(update, future, priority, next(self._seq), requires))
        logger.info("%s: queued %r", self.name, update)
        return future

    def apply_update(self, update: _U, timeout: float | None = None, priority: int = 0) -> _U:
        """Add ``update`` and wait for its outcome: returns it once applied, raises what its
        future carries (see the module notes), or ``TimeoutError`` after ``timeout`` seconds.

        Raises ``DeadlockDetectedError`` at once instead of waiting for ever when called by a
        thread that must park at an update point for this update, from inside an update's
        steps, or (for a threaded manager) by the manager's own thread. A polling manager is
        driven by the calling thread.
        """
        self._refuse_deadlock(update)
        future = self.add_update(update, priority)
        self._wait_for(future, timeout)
        future.result(0)  # raises the update's error, if it ended with one
        return update

    def _refuse_deadlock(self, update: Update) -> None:
        reason = self._deadlock(update, "apply_update()")
        if reason is not None:
            raise DeadlockDetectedError(reason)

    def _deadlock(self, update: Update, call: str) -> str | None:
        """Why the calling thread would wait for ever for ``update`` with ``call``, or None."""
        me = threading.current_thread()
        if getattr(_local, "in_steps", False):
            return (f"{call} on {update.name!r} called from inside another update's steps: "
                    "that update cannot finish while this one waits for it")
        if me in (update.threads or self.threads):
            return (f"{call} on {update.name!r} called by {me.name!r}, a thread the update needs "
                    "suspended: it would wait for itself (wait from another thread, or use "
                    "add_done_callback)")
        return None

    def _wait_for(self, future: UpdateFuture, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not future.done():  # a polling manager: the caller drives it
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the update was not done within {timeout} s")
            if self.apply_next_update() is None and not future.done():
                self._idle_wait(deadline)

    def _idle_wait(self, deadline: float | None) -> None:
        """Nothing can run now (postponed updates backing off): wait for the next one."""
        with self._lock:
            pause = self._wake_delay()
        if pause is not None:
            if deadline is not None:
                pause = min(pause, deadline - time.monotonic())
            if pause > 0:
                threading.Event().wait(pause)

    def pending(self) -> list[Update]:
        """The updates waiting in the queue, in the order they will run."""
        with self._lock:
            return [entry.update for entry in self._queue]

    @property
    def current_update(self) -> Update | None:
        """The update being applied now, or None."""
        current = self._current
        return None if current is None else current[0].update

    def status(self) -> ManagerStatus:
        """A frozen snapshot of the manager (:class:`ManagerStatus`), safe to take from any
        thread: what ``pymoult status`` reports."""
        current = self.current_update
        return ManagerStatus(
            name=self.name, kind=type(self).__name__,
            current=None if current is None else current.status(),
            pending=tuple(QueuedUpdate(u.name, u.state.value) for u in self.pending()),
            statistics=types.MappingProxyType(self.statistics()))

    # -- driving -----------------------------------------------------------------------------

    def apply_next_update(self) -> Update | None:
        """Advance the current update by one step (starting the next queued one if none).

        Returns the update it worked on, or None when there was nothing to do.
        """
        with self._lock:
            if self._current is None:
                entry = self._next_due()
                if entry is None:
                    return None
                if not entry.future.running() and not entry.future.set_running_or_notify_cancel():
                    self._end(entry, UpdateState.CANCELLED)  # cancelled while queued
                    return entry.update
                self._current = (entry, self._lifecycle(entry))
            entry, steps = self._current
            if steps is None:  # a threaded manager's thread is running it: not ours to drive
                return None
            _local.in_steps = True  # a blocking apply_update from inside a step would deadlock
            try:
                with alterability.collect_watchers(entry.watchers):
                    next(steps)
            except StopIteration:
                self._current = None
            except BaseException as exc:  # a step of the update raised
                self._current = None
                self._fail(entry, exc)
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
            finally:
                _local.in_steps = False
            return entry.update

    def _fail(self, entry: _Entry, exc: BaseException) -> None:
        """A step raised outside apply: release what the update holds, fail its future."""
        logger.error("%s: %r failed", self.name, entry.update, exc_info=exc)
        if entry.update.state is UpdateState.WAITING:
            try:
                entry.update.clean_failed_alterability()
            except Exception:
                logger.exception("%s: cleaning up %r failed", self.name, entry.update)
        if entry.future.done():
            return
        if entry.update.state is UpdateState.APPLIED:  # wait_over/check_over raised
            error = UpdateStepError(f"{entry.update.name!r} is applied, but a step after apply "
                                    f"raised {exc!r}", entry.update, "over")
            error.__cause__ = exc
            self._end(entry, UpdateState.APPLIED, error)
        else:
            self._end(entry, UpdateState.FAILED, exc)

    def _next_due(self) -> _Entry | None:
        """Pop the first queued update that may start now (back-off passed, requirements
        applied), or None. An update whose requirement ended unapplied is aborted here."""
        now = time.monotonic()
        for index, entry in enumerate(self._queue):
            if entry.not_before > now:
                continue
            states = [required.state for required in entry.requires]
            failed = [r for r, state in zip(entry.requires, states)
                      if state.finished and state is not UpdateState.APPLIED]
            if failed:
                del self._queue[index]
                if entry.future.set_running_or_notify_cancel():
                    self._end(entry, UpdateState.ABORTED, UpdateAbortedError(
                        f"{entry.update.name!r} requires {failed[0].name!r}, which ended "
                        f"{failed[0].state.value}", entry.update))
                return self._next_due()
            if all(state is UpdateState.APPLIED for state in states):
                del self._queue[index]
                return entry
        return None

    def _wake_delay(self) -> float | None:
        """Seconds until a queued update may become due (None: only an add_update can help).

        Updates waiting for a requirement that is not progressing here (an update of another
        manager) are re-checked every 50 ms."""
        now = time.monotonic()
        delays = []
        for entry in self._queue:
            if any(not r.state.finished for r in entry.requires):
                delays.append(_REQUIREMENT_RECHECK)
            else:
                delays.append(max(0.0, entry.not_before - now))
        return min(delays, default=None)

    #: How many records :meth:`history` keeps (the most recent); older ones are only counted,
    #: by final state (:meth:`forgotten`). Set it on a manager or on the class.
    history_size = 500

    def history(self) -> list[UpdateRecord]:
        """Records of the updates this manager finished, oldest first (:class:`UpdateRecord`):
        the last ``history_size`` of them (:meth:`forgotten` counts the older ones)."""
        with self._lock:
            return list(self._history)

    def forgotten(self) -> dict[str, int]:
        """Counts, by final state, of the records dropped from the history to keep it within
        ``history_size`` (``{}`` when none was)."""
        with self._lock:
            return dict(self._forgotten)

    def finish(self) -> Update | None:
        """Drive the current update (if any) to its end; returns it."""
        with self._lock:
            current = self._current
            if current is None:
                return None
            while self._current is current:
                self.apply_next_update()
            return current[0].update

    def _unapplied_current(self) -> _Entry | None:
        """The current entry if its update has not started applying, else None (lock held)."""
        if self._current is None:
            return None
        entry = self._current[0]
        if entry.update.state not in (UpdateState.PENDING, UpdateState.WAITING):
            return None
        return entry

    def postpone(self) -> bool:
        """Put the current update back at the end of its priority (if it has not applied yet)."""
        with self._lock:
            entry = self._unapplied_current()
            if entry is None:
                return False
            entry.update.clean_failed_alterability()
            self._requeue(entry, "postpone() asked", back_off=False)
            self._current = None
            return True

    def abort(self) -> bool:
        """Abandon the current update if it has not applied yet; its future gets
        ``UpdateAbortedError``."""
        with self._lock:
            entry = self._unapplied_current()
            if entry is None:
                return False
            entry.update.clean_failed_alterability()
            self._end(entry, UpdateState.ABORTED,
                      UpdateAbortedError(f"{entry.update.name!r} was aborted", entry.update))
            self._current = None
            return True

    # -- the lifecycle, one step per next() ----------------------------------------------------

    def _record(self, update: Update) -> None:
        record = UpdateRecord(update, update.times.get("added", 0.0))
        with self._lock:
            self._history.append(record)
            while len(self._history) > max(0, int(self.history_size)):
                old = self._history.popleft()
                self._forgotten[old.state] = self._forgotten.get(old.state, 0) + 1
        logger.debug("%s: history: %s", self.name, record.as_dict())

    def _end(self, entry: _Entry, state: UpdateState, error: BaseException | None = None) -> None:
        """The one ending path: every outcome (applied included) goes through it, in this
        order: held callers released, the final state, the history record, then the future
        (a cancelled future stays cancelled)."""
        update = entry.update
        entry.release_watchers(self.name)
        if state is not UpdateState.APPLIED:
            self._undo_unapplied(update)
        update.state = state
        update.error = error
        update.mark("end")
        self._record(update)
        future = entry.future
        if not future.cancelled():
            if error is None:
                future.set_result(update)
            else:
                future.set_exception(error)
        if error is None and state in (UpdateState.APPLIED, UpdateState.CANCELLED):
            logger.info("%s: %r", self.name, update)
        else:
            logger.warning("%s: %r", self.name, update)

    def _undo_unapplied(self, update: Update) -> None:
        """An update that ends (or goes back to the queue) without being applied: undo what its
        setup recorded, so that the program is as before it."""
        if update.journal.state == "open" and len(update.journal):
            logger.info("%s: undoing the setup of %r", self.name, update)
            residue = _roll_back(update)
            if residue:
                logger.error("%s: the setup of %r was partially undone: %s", self.name, update,
                             "; ".join(residue))

    def _requeue(self, entry: _Entry, why: str, back_off: bool = True) -> None:
        """The one way back to the queue (postponed): the update is pending again, after the
        others of its priority, and, with ``back_off``, not before ``sleep_time`` doubled per
        postponement (at most ``MAX_BACK_OFF``). Nothing was changed: a fresh journal."""
        update = entry.update
        self._undo_unapplied(update)  # setup runs again when it is retried
        update.state = UpdateState.PENDING
        update.postponements += 1
        update.tries = 0
        update.journal = Journal(update.name)
        entry.request = None
        entry.not_before = time.monotonic() + (min(
            update.sleep_time * 2 ** min(update.postponements - 1, 10), MAX_BACK_OFF)
            if back_off else 0.0)
        with self._lock:
            entry.seq = next(self._seq)
            self._queue.add(entry)
        logger.info("%s: %r postponed (%s)", self.name, update, why)

    def _lifecycle(self, entry: _Entry, blocking: bool = False) -> _Steps:
        try:
            yield from self._steps(entry, blocking)
        finally:  # its checks are over: let go of the stacks kept between them
            forget_stacks()

    def _steps(self, entry: _Entry, blocking: bool) -> _Steps:
        update = entry.update
        answer = update.check_requirements()
        if answer == "never":
            self._end(entry, UpdateState.ABORTED, UpdateAbortedError(
                f"{update.name!r}: its requirements answered 'never'", update))
            return
        if answer == "no" and self._stopping_now():
            self._end(entry, UpdateState.CANCELLED, UpdateAbortedError(
                f"{update.name!r} was postponed while the manager stopped", update))
            return
        if answer == "no":
            self._requeue(entry, "requirements: no")
            return
        if answer != "yes":
            self._end(entry, UpdateState.FAILED, UpdateAbortedError(
                f"{update.name!r}: check_requirements returned {answer!r}, not 'yes', 'no' or "
                "'never'", update))
            return
        if has_setup(update):  # else nothing of the update runs: nothing to watch
            with update.journal.recording():  # setup's changes are undone with the update's
                watch = update.journal.watch(update.watched())
                try:
                    update.preupdate_setup()
                finally:
                    watch.settle()
        update.mark("setup")
        update.state = UpdateState.WAITING
        yield
        if blocking:
            update.tries += 1
            if not update.wait_alterability():
                why = _why_not_alterable(update)
                update.clean_failed_alterability()
                self._not_alterable(entry, f"not alterable within its patience "
                                           f"({_patience_text(update)}){why}")
                return
            yield from self._apply(entry, blocking)
            return
        while True:
            update.tries += 1
            if update.check_alterability():
                break
            if update.tries >= update.max_tries:
                why = _why_not_alterable(update)
                update.clean_failed_alterability()
                self._not_alterable(entry, f"not alterable after {update.tries} tries{why}")
                return
            yield
        yield from self._apply(entry, blocking)

    def _retry_alterability(self, entry: _Entry, exc: BaseException, paused: float) -> bool:
        """``apply`` found the update not alterable after all, having changed nothing: wait for
        alterability again, with back-off (False when out of postponements: it fails)."""
        update = entry.update
        update.resume()
        update.pause = time.monotonic() - paused
        update.resume_hook()
        if update.postponements >= update.max_postponements or self._stopping_now():
            return False
        self._requeue(entry, f"not alterable at apply after all: {exc}")
        return True

    def _not_alterable(self, entry: _Entry, why: str) -> None:
        """Alterability was not reached: fail, or postpone with back-off, per the update."""
        update = entry.update
        if (update.on_timeout == "postpone" and update.postponements < update.max_postponements
                and not self._stopping_now()):
            self._requeue(entry, why)
            return
        if update.postponements:
            why += f" (after {update.postponements} postponements)"
        self._end(entry, UpdateState.FAILED, UpdateTimeoutError(f"{update.name!r}: {why}"))

    def _stopping_now(self) -> bool:
        return False  # a polling manager is never stopped

    def statistics(self) -> dict[str, Any]:
        """Counts of finished updates by final state (those dropped from the history
        included), and the median and longest pause (s) of those in the history."""
        with self._lock:
            records = list(self._history)
            forgotten = dict(self._forgotten)
            queued = len(self._queue)
        pauses = sorted(r.pause for r in records if r.pause is not None)
        counts: dict[str, int] = forgotten
        for record in records:
            counts[record.state] = counts.get(record.state, 0) + 1
        return {"finished": counts, "queued": queued,
                "pause_median": pauses[len(pauses) // 2] if pauses else None,
                "pause_max": pauses[-1] if pauses else None}

    def _apply(self, entry: _Entry, blocking: bool = False) -> _Steps:
        update = entry.update
        if entry.request is not None:  # abort/postpone asked while it waited (threaded manager)
            update.clean_failed_alterability()
            if entry.request == "postpone" and not self._stopping_now():
                self._requeue(entry, "postpone() asked", back_off=False)
            else:
                self._end(entry, UpdateState.ABORTED,
                          UpdateAbortedError(f"{update.name!r} was aborted", update))
            return
        paused = time.monotonic()
        update.mark("alterable")
        update.state = UpdateState.APPLYING
        held = [t.name for t in update.suspended_threads()]
        if held:
            logger.info("Manager %s suspended thread%s %s", self.name, "s"[:len(held) > 1],
                        ", ".join(held))
        before = len(update.journal)  # what setup recorded
        try:
            update.pause_hook()
            with update.journal.recording(), stop_the_world(APPLY_GUARANTEE):
                watch = update.journal.watch(update.watched())
                try:
                    update.apply()
                finally:
                    watch.settle()
        except BaseException as exc:
            if isinstance(exc, NotAlterableNow) and len(update.journal) == before \
                    and self._retry_alterability(entry, exc, paused):
                return
            if isinstance(exc, PymoultError):  # a refusal or a decision: its sentence says it
                logger.warning("%s: apply of %r stopped (%s); rolling back", self.name, update,
                               exc)
                logger.debug("%s: where it stopped", self.name, exc_info=True)
            else:  # the update's own code raised: its traceback
                logger.error("%s: apply of %r failed; rolling back", self.name, update,
                             exc_info=True)
            try:
                residue = _roll_back(update)
            finally:
                update.resume()
                update.pause = time.monotonic() - paused
                update.resume_hook()
            if residue:
                error = PartialRollbackError(
                    f"{update.name!r} partially rolled back: {'; '.join(residue)}", residue)
                error.__cause__ = exc
                self._end(entry, UpdateState.PARTIALLY_ROLLED_BACK, error)
            else:
                self._end(entry, UpdateState.ROLLED_BACK, exc)
            if not blocking and isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise  # the application's own interrupt, after the update was undone
            return
        update.journal.commit()
        update.mark("applied")
        step_error = self._after_apply(update, "preresume_setup")
        update.resume()
        update.pause = time.monotonic() - paused
        if held:
            logger.info("Manager %s resumed thread%s %s", self.name, "s"[:len(held) > 1],
                        ", ".join(held))
        update.resume_hook()
        update.state = UpdateState.APPLIED  # isApplied() is true from here on
        yield
        if blocking:
            update.wait_over()
        else:
            while not update.check_over():
                yield
        step_error = self._after_apply(update, "cleanup") or step_error
        logger.info("%s: %r applied (paused %.2f ms)", self.name, update, update.pause * 1e3)
        self._end(entry, UpdateState.APPLIED, step_error)

    def _after_apply(self, update: Update, step: str) -> UpdateStepError | None:
        try:
            getattr(update, step)()
        except Exception as exc:
            logger.exception("%s: %s of %r failed after apply", self.name, step, update)
            error = UpdateStepError(f"{update.name!r} is applied, but its {step} raised {exc!r}",
                                    update, step)
            error.__cause__ = exc
            return error
        return None

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} current={self.current_update!r} "
                f"queued={len(self._queue)}>")


_busy_lock = threading.Lock()
class _BusyCount:
    """The process-wide count of busy threaded managers, and the switch interval the first one
    saved (None: it was not shortened)."""

    count = 0
    saved: float | None = None


_busy = _BusyCount()


def _busy_managers(delta: int, interval: float | None = None) -> None:
    """Process-wide count of busy threaded managers: the first one in saves the switch interval
    and shortens it (to ``interval``), the last one out restores it."""
    with _busy_lock:
        if delta > 0:
            if _busy.count == 0:
                current = sys.getswitchinterval()
                if interval is not None and current > interval:
                    _busy.saved = current
                    set_switch_interval(interval)
            _busy.count += 1
        else:
            _busy.count -= 1
            if _busy.count == 0 and _busy.saved is not None:
                set_switch_interval(_busy.saved)
                _busy.saved = None


class ThreadedManager(Manager):
    """A manager running in its own thread: it applies queued updates one at a time, waiting
    for alterability with the blocking steps (``wait_alterability``, woken by the threads as
    they park) and sleeping on a condition between updates: no polling.

    ``start()`` starts it; ``stop()`` ends it and cancels the futures of queued updates. Nothing
    an update does ends the manager's thread: every failure goes to that update's future.
    """

    #: GIL switch interval while the manager has work (None: leave it alone). Busy application
    #: threads otherwise hold the GIL for the default 5 ms each time the manager thread needs it
    #: to take a step, which is most of an update's latency.
    busy_switch_interval: float | None = 0.0002

    #: Seconds an update point may wait for this manager's thread to wake when an update is
    #: added to an idle manager (None: no waiting). Busy threads otherwise keep the GIL from
    #: the waking manager for several switch intervals. See ``pymoult._parking.Handoff``.
    wake_handoff: float | None = 0.002

    def __init__(self, name: str | None = None,
                 threads: Iterable[threading.Thread] | None = None) -> None:
        super().__init__(name, threads)
        self._busy = False  # holds one count of the process-wide "busy managers"
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._idle = threading.Event()
        self._idle.set()
        self._asleep = False  # the thread waits on _wake for work (add_update may hand off)
        self._handoff: Handoff | None = None
        #: set_sleepTime: a default patience step for updates
        self.sleep_time: float | None = None

    def start(self) -> ThreadedManager:
        with self._lock:
            if self._thread is not None:
                raise ThreadStateError(f"{self!r} was already started")
            self._thread = threading.Thread(target=self._serve, name=f"pymoult {self.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the update in progress; queued updates are cancelled. Returns True once
        the manager's thread has ended (False if ``timeout`` ran out first)."""
        with self._lock:
            self._stopping = True
            queued, self._queue = list(self._queue), SortedKeyList(key=_queue_order)
            self._wake.notify_all()
        for entry in queued:
            if entry.future.cancel():
                self._end(entry, UpdateState.CANCELLED)
            elif not entry.future.done():  # postponed: its future is running
                self._end(entry, UpdateState.CANCELLED, UpdateAbortedError(
                    f"{entry.update.name!r} was still postponed when the manager stopped",
                    entry.update))
        thread = self._thread
        if thread is None:
            self._rest()
            return True
        if thread is threading.current_thread():
            return False
        thread.join(timeout)
        return not thread.is_alive()

    def _stopping_now(self) -> bool:
        return self._stopping

    def postpone(self) -> bool:
        """Ask the manager thread to put the current update back in the queue before it
        applies it (honoured once its wait for alterability returns)."""
        return self._request("postpone")

    def abort(self) -> bool:
        """Ask the manager thread to abandon the current update before it applies it."""
        return self._request("abort")

    def _request(self, what: Literal["abort", "postpone"]) -> bool:
        with self._lock:
            entry = self._unapplied_current()
            if entry is None:
                return False
            entry.request = what
            return True

    def set_sleepTime(self, seconds: float) -> None:
        """The ``sleep_time`` given to updates added from now on that did not set their own."""
        self.sleep_time = check_timeout(seconds, "sleep time")

    def add_update(self, update: Update, priority: int = 0,
                   requires: Iterable[Update] = ()) -> UpdateFuture:
        if self.sleep_time is not None and "sleep_time" not in vars(update):
            update.sleep_time = self.sleep_time
        with self._lock:
            if self._stopping:
                raise ThreadStateError(f"{self!r} is stopped: it takes no more updates")
            future = super().add_update(update, priority, requires)
            self._idle.clear()
            self._hurry()
            if self._asleep and self._handoff is None and self.wake_handoff is not None:
                self._handoff = open_handoff(self.wake_handoff)
            self._wake.notify_all()
        return future

    def _hurry(self) -> None:
        """Shorten the GIL switch interval while there is work (restored by _rest)."""
        if self.busy_switch_interval is not None and not self._busy:
            self._busy = True
            _busy_managers(+1, self.busy_switch_interval)

    def _rest(self) -> None:
        if self._busy:
            self._busy = False
            _busy_managers(-1)

    def wait_current_update(self, timeout: float | None = None) -> bool:
        """Block until the manager has nothing left to do; True then, False on timeout.

        Raises ``DeadlockDetectedError`` at once when called by the manager's own thread, or by
        a thread that the current or a queued update needs suspended."""
        if threading.current_thread() is self._thread:
            raise DeadlockDetectedError(f"{self.name!r} cannot wait for itself")
        with self._lock:
            current = self.current_update
            updates = ([] if current is None else [current]) + [e.update for e in self._queue]
        for update in updates:
            reason = self._deadlock(update, "wait_current_update()")
            if reason is not None:
                raise DeadlockDetectedError(reason)
        return self._idle.wait(timeout)

    def _refuse_deadlock(self, update: Update) -> None:
        if self._thread is None:
            raise ThreadStateError(f"{self!r} is not started: nothing would apply the update")
        super()._refuse_deadlock(update)

    def _deadlock(self, update: Update, call: str) -> str | None:
        if self._thread is not None and threading.current_thread() is self._thread:
            return (f"{call} on {update.name!r} called from {self.name!r}'s own thread, which "
                    "is the one that would apply it")
        return super()._deadlock(update, call)

    def _wait_for(self, future: UpdateFuture, timeout: float | None) -> None:
        if self._thread is None:
            raise ThreadStateError(f"{self!r} is not started: nothing would apply the update")
        # wait() rather than result(timeout): on 3.11+ concurrent.futures.TimeoutError is the
        # builtin TimeoutError, which an update's own UpdateTimeoutError outcome also is
        done, _ = futures_wait([future], timeout)
        if not done:
            raise TimeoutError(f"the update was not done within {timeout} s")

    def _serve(self) -> None:
        while True:
            with self._lock:
                entry = None
                while not self._stopping:
                    entry = self._next_due()
                    if entry is not None:
                        break
                    delay = self._wake_delay()
                    if delay is None:
                        self._rest()
                        self._idle.set()
                    self._asleep = True
                    try:
                        self._wake.wait(delay)
                    finally:
                        self._asleep = False
                        if self._handoff is not None:
                            self._handoff.close()
                            self._handoff = None
                if entry is None:  # the loop ends without one only when stopping
                    self._rest()
                    self._idle.set()
                    return
            try:
                self._run(entry)
            except BaseException:  # nothing may end the manager's thread
                logger.exception("%s: internal error running %r", self.name, entry.update)

    def _run(self, entry: _Entry) -> None:
        if entry.future.done():  # resolved meanwhile (aborted or stopped)
            return
        if not entry.future.running() and not entry.future.set_running_or_notify_cancel():
            self._end(entry, UpdateState.CANCELLED)
            return
        with self._lock:
            self._current = (entry, None)
        _local.in_steps = True
        try:
            with alterability.collect_watchers(entry.watchers):
                for _ in self._lifecycle(entry, blocking=True):
                    pass
        except BaseException as exc:  # a step raised: the update ends, the manager does not
            self._fail(entry, exc)
        finally:
            _local.in_steps = False
            with self._lock:
                self._current = None


def generatePreconfiguredManager(managerClass: type[_M], updateClass: type[Update],
                                 **attributes: Any) -> type[_M]:
    """A manager class whose ``add_update`` sets ``attributes`` on every update of
    ``updateClass`` it receives (shared patience, threads...)."""
    if not (isinstance(managerClass, type) and issubclass(managerClass, Manager)):
        raise PymoultTypeError(f"managerClass must be a Manager class, got {managerClass!r}")

    class Preconfigured(managerClass):  # type: ignore[valid-type,misc]  # a class made at run time
        def add_update(self, update: Update, priority: int = 0,
                       requires: Iterable[Update] = ()) -> UpdateFuture:
            if isinstance(update, updateClass):
                for key, value in attributes.items():
                    setattr(update, key, value)
            return super().add_update(update, priority, requires)

    Preconfigured.__name__ = Preconfigured.__qualname__ = f"Preconfigured{managerClass.__name__}"
    made: type[_M] = Preconfigured
    return made

