"""Managers: they queue updates and drive each through its lifecycle.

:class:`Manager` is the polling manager of the original Pymoult: the application calls
:meth:`Manager.apply_next_update` at moments of its choice, and each call advances the current
update by one step (requirements, setup, one alterability try, apply, resume, over, cleanup).

``add_update`` returns a ``concurrent.futures.Future`` that carries the outcome: the update itself
once applied; ``UpdateTimeoutError`` when alterability was not reached within its patience;
``UpdateAbortedError`` when it was abandoned; the exception ``apply`` raised, after the update's
journal has rolled back everything it changed and the threads were released on the old version;
``UpdateStepError`` when a step after apply failed (the update stays applied). A failing update
never stops the manager: it goes on with the next one.

``apply`` runs with the update's journal recording and inside a stop-the-world window, after the
update's threads have parked, so no thread sees part of an update.
"""

import itertools
import logging
import threading
import time
import weakref
from concurrent.futures import Future

from sortedcontainers import SortedKeyList

from ..errors import (PymoultTypeError, UpdateAbortedError, UpdateStepError, UpdateTimeoutError)
from ..lowlevel.world import stop_the_world
from .updates import UpdateState, check_definition

__all__ = ["Manager", "fetch_manager", "generatePreconfiguredManager"]

logger = logging.getLogger("pymoult")

_managers = weakref.WeakValueDictionary()
_managers_lock = threading.Lock()

#: The window apply runs in (seconds of guaranteed exclusion; see pymoult.lowlevel.world).
APPLY_GUARANTEE = 0.05


def fetch_manager(name):
    """The live manager called ``name``, or None (update scripts use it to reach the app's)."""
    return _managers.get(name)


class _Entry:
    __slots__ = ("update", "future", "priority", "seq")

    def __init__(self, update, future, priority, seq):
        self.update, self.future, self.priority, self.seq = update, future, priority, seq


class Manager:
    """A polling manager: updates advance one step per :meth:`apply_next_update` call.

    ``threads`` are given to updates that name none. Updates are applied one at a time, in
    priority order (lower first), then in the order they were added.
    """

    def __init__(self, name=None, threads=None):
        self.name = name or f"{type(self).__name__}-{id(self):x}"
        self.threads = list(threads or [])
        self._queue = SortedKeyList(key=lambda entry: (entry.priority, entry.seq))
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self._current = None  # (entry, lifecycle generator)
        with _managers_lock:
            _managers[self.name] = self

    # -- submitting ----------------------------------------------------------------------------

    def add_update(self, update, priority=0):
        """Queue ``update``; returns the Future of its outcome (see the module notes).

        Raises ``UpdateDefinitionError`` at once for an update that cannot run.
        """
        check_definition(update)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise PymoultTypeError(f"priority must be an int, got {priority!r}")
        if not update.threads:
            update.threads = list(self.threads)
        future = Future()
        with self._lock:
            self._queue.add(_Entry(update, future, priority, next(self._seq)))
        logger.info("%s: queued %r", self.name, update)
        return future

    def pending(self):
        """The updates waiting in the queue, in the order they will run."""
        with self._lock:
            return [entry.update for entry in self._queue]

    @property
    def current_update(self):
        current = self._current
        return None if current is None else current[0].update

    # -- driving -----------------------------------------------------------------------------

    def apply_next_update(self):
        """Advance the current update by one step (starting the next queued one if none).

        Returns the update it worked on, or None when there was nothing to do.
        """
        with self._lock:
            if self._current is None:
                if not self._queue:
                    return None
                entry = self._queue.pop(0)
                if not entry.future.running() and not entry.future.set_running_or_notify_cancel():
                    entry.update.state = UpdateState.CANCELLED  # cancelled while queued
                    return entry.update
                self._current = (entry, self._lifecycle(entry))
            entry, steps = self._current
            try:
                next(steps)
            except StopIteration:
                self._current = None
            return entry.update

    def finish(self):
        """Drive the current update (if any) to its end; returns it."""
        with self._lock:
            current = self._current
            if current is None:
                return None
            while self._current is current:
                self.apply_next_update()
            return current[0].update

    def postpone(self):
        """Put the current update back at the end of its priority (if it has not applied yet)."""
        with self._lock:
            if self._current is None:
                return False
            entry, _ = self._current
            if entry.update.state not in (UpdateState.PENDING, UpdateState.WAITING):
                return False
            entry.update.clean_failed_alterability()
            entry.update.state = UpdateState.PENDING
            entry.update.postponements += 1
            entry.seq = next(self._seq)
            self._queue.add(entry)
            self._current = None
            return True

    def abort(self):
        """Abandon the current update if it has not applied yet; its future gets
        ``UpdateAbortedError``."""
        with self._lock:
            if self._current is None:
                return False
            entry, _ = self._current
            if entry.update.state not in (UpdateState.PENDING, UpdateState.WAITING):
                return False
            entry.update.clean_failed_alterability()
            self._end(entry, UpdateState.ABORTED,
                      UpdateAbortedError(f"{entry.update.name!r} was aborted", entry.update))
            self._current = None
            return True

    # -- the lifecycle, one step per next() ----------------------------------------------------

    def _end(self, entry, state, error=None):
        update = entry.update
        update.state = state
        update.error = error
        update.mark("end")
        if error is None:
            entry.future.set_result(update)
            logger.info("%s: %r", self.name, update)
        else:
            entry.future.set_exception(error)
            logger.warning("%s: %r", self.name, update)

    def _lifecycle(self, entry):
        update = entry.update
        answer = update.check_requirements()
        if answer == "never":
            self._end(entry, UpdateState.ABORTED, UpdateAbortedError(
                f"{update.name!r}: its requirements answered 'never'", update))
            return
        if answer == "no":
            update.postponements += 1
            with self._lock:
                entry.seq = next(self._seq)
                self._queue.add(entry)
            logger.info("%s: %r postponed (requirements: no)", self.name, update)
            return
        if answer != "yes":
            self._end(entry, UpdateState.FAILED, UpdateAbortedError(
                f"{update.name!r}: check_requirements returned {answer!r}, not 'yes', 'no' or "
                "'never'", update))
            return
        update.preupdate_setup()
        update.mark("setup")
        update.state = UpdateState.WAITING
        yield
        while True:
            update.tries += 1
            if update.check_alterability():
                break
            if update.tries >= update.max_tries:
                update.clean_failed_alterability()
                self._end(entry, UpdateState.FAILED, UpdateTimeoutError(
                    f"{update.name!r}: not alterable after {update.tries} tries"))
                return
            yield
        yield from self._apply(entry)

    def _apply(self, entry):
        update = entry.update
        paused = time.monotonic()
        update.mark("alterable")
        update.pause_hook()
        update.state = UpdateState.APPLYING
        try:
            with update.journal.recording(), stop_the_world(APPLY_GUARANTEE):
                update.apply()
        except Exception as exc:
            logger.error("%s: apply of %r failed; rolling back", self.name, update, exc_info=True)
            try:
                update.journal.rollback()
            finally:
                update.resume()
                update.pause = time.monotonic() - paused
                update.resume_hook()
            self._end(entry, UpdateState.ROLLED_BACK, exc)
            return
        update.journal.commit()
        update.mark("applied")
        step_error = self._after_apply(update, "preresume_setup")
        update.resume()
        update.pause = time.monotonic() - paused
        update.resume_hook()
        update.state = UpdateState.APPLIED
        yield
        while not update.check_over():
            yield
        step_error = self._after_apply(update, "cleanup") or step_error
        entry.update.mark("end")
        if step_error is not None:
            entry.future.set_exception(step_error)
            update.error = step_error
        else:
            entry.future.set_result(update)
        logger.info("%s: %r (paused %.2f ms)", self.name, update, update.pause * 1e3)

    def _after_apply(self, update, step):
        try:
            getattr(update, step)()
        except Exception as exc:
            logger.exception("%s: %s of %r failed after apply", self.name, step, update)
            error = UpdateStepError(f"{update.name!r} is applied, but its {step} raised {exc!r}",
                                    update, step)
            error.__cause__ = exc
            return error
        return None

    def __repr__(self):
        return (f"<{type(self).__name__} {self.name!r} current={self.current_update!r} "
                f"queued={len(self._queue)}>")


def generatePreconfiguredManager(managerClass, updateClass, **attributes):
    """A manager class whose ``add_update`` sets ``attributes`` on every update of
    ``updateClass`` it receives (shared patience, threads...)."""
    if not (isinstance(managerClass, type) and issubclass(managerClass, Manager)):
        raise PymoultTypeError(f"managerClass must be a Manager class, got {managerClass!r}")

    class Preconfigured(managerClass):
        def add_update(self, update, priority=0):
            if isinstance(update, updateClass):
                for key, value in attributes.items():
                    setattr(update, key, value)
            return super().add_update(update, priority)

    Preconfigured.__name__ = Preconfigured.__qualname__ = f"Preconfigured{managerClass.__name__}"
    return Preconfigured
