"""An update and its lifecycle: the states a manager drives it through, its steps, and the
record of which updates are applied (``isApplied``).

An :class:`Update` goes through explicit states, shown in its ``repr``::

    pending -> waiting for alterability -> applying -> applied / rolled back /
                                                       partially rolled back

- back to *pending* (postponed): from pending (requirements "no"), from waiting (not alterable
  within the patience, or ``postpone()``), from applying (not alterable after all inside the
  apply window, before anything changed);
- ended early: *aborted* (requirements "never", a required update not applied, ``abort()``),
  *cancelled* (future cancelled, manager stopped), *failed* (out of postponements, a step
  raised) from pending or waiting; *failed* also from applying (an internal error).

``TRANSITIONS`` is the table; setting ``update.state`` to a state it does not list raises
``LifecycleError``. The final states (rolled back, partially rolled back, failed, aborted,
cancelled, reverted) lead nowhere; *applied* leads only to *reverted* (or *partially rolled
back*), when a ``RevertUpdate`` (``pymoult.highlevel.revert``) undoes it later. "Partially
rolled back" says that a rollback left something changed (an operation that could not be
undone): ``update.error.residue`` says what.

Each step is a method a subclass may override (the names are the original Pymoult's):
``check_requirements`` ("yes" / "no": postpone / "never": abort), ``preupdate_setup``,
``wait_alterability`` (blocking managers) or ``check_alterability`` (polling managers),
``clean_failed_alterability``, ``apply``, ``preresume_setup``, ``wait_over`` / ``check_over``,
``cleanup``, and the ``pause_hook`` / ``resume_hook`` around the pause. By default an update is
alterable once its ``threads`` (the manager's threads when it names none) are suspended, and they
are resumed after it. As in the original Pymoult, threads are suspended wherever they are: a
thread parks at its next static update point if it reaches one within a short grace, or else at
its next event in application code, or counts as suspended at once when it is blocked (see
``suspend_thread`` in ``pymoult.lowlevel.alterability``). ``suspension = "points"`` waits for
static update points only. The safe redefinitions also wait for the quiescence of their
function, checked while the threads are suspended and again inside the apply window.

When alterability is not reached within the patience (``max_tries`` tries ``sleep_time`` apart,
or ``timeout`` seconds), the update is *postponed*, as in the original: the manager tries the
next queued update and comes back to it later, at most ``max_postponements`` times before it
fails with an ``UpdateTimeoutError`` saying which threads were not suspended and which functions
still ran (``on_timeout = "fail"`` fails at once).

Everything ``preupdate_setup`` and ``apply`` change through Pymoult's mechanisms is recorded in
``update.journal``, so a failing ``apply`` is rolled back exactly (the managers do it), setup
included; so is an update that ends without being applied (failed, aborted, postponed: its setup
runs again when it is retried). What the two steps change *without* those mechanisms in the
namespaces the update names (:meth:`Update.watched`: modules and classes among its attributes)
is journaled as well when the step returns. Anything else a step changes by hand is the step's
own business: the managers cannot see it, and a rollback does not undo it.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
import sys
import threading
import time
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from .._parking import check_timeout
from ..errors import LifecycleError, PymoultTypeError, PymoultValueError, UpdateDefinitionError
from ..lowlevel import alterability
from ..lowlevel.journal import Journal

if TYPE_CHECKING:
    from typing import TypedDict

    class Patience(TypedDict, total=False):
        """The patience keywords of :class:`Update`, which the ready-made updates take as
        ``**patience``."""

        max_tries: int | None
        sleep_time: float | None
        timeout: float | None

__all__ = ["Update", "UpdateState", "UpdateStatus", "TRANSITIONS", "isApplied",
           "applied_update_names", "applied_after", "mark_applied", "check_definition",
           "has_setup", "APPLIED_NAMES_KEPT", "APPLIED_ORDER_KEPT"]


class UpdateState(enum.Enum):
    """Where an update is in its lifecycle."""

    PENDING = "pending"
    WAITING = "waiting for alterability"
    APPLYING = "applying"
    APPLIED = "applied"
    REVERTED = "reverted"
    ROLLED_BACK = "rolled back"
    PARTIALLY_ROLLED_BACK = "partially rolled back"
    FAILED = "failed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (UpdateState.PENDING, UpdateState.WAITING, UpdateState.APPLYING)


_S = UpdateState
#: state -> the states an update may go to from it (the lifecycle; see the module notes).
TRANSITIONS: dict[UpdateState, frozenset[UpdateState]] = {
    _S.PENDING: frozenset({_S.PENDING, _S.WAITING, _S.ABORTED, _S.CANCELLED, _S.FAILED}),
    _S.WAITING: frozenset({_S.APPLYING, _S.PENDING, _S.ABORTED, _S.CANCELLED, _S.FAILED}),
    _S.APPLYING: frozenset({_S.APPLIED, _S.ROLLED_BACK, _S.PARTIALLY_ROLLED_BACK, _S.PENDING,
                            _S.FAILED}),
    _S.APPLIED: frozenset({_S.REVERTED, _S.PARTIALLY_ROLLED_BACK}),  # by a RevertUpdate only
    _S.REVERTED: frozenset(),
    _S.ROLLED_BACK: frozenset(),
    _S.PARTIALLY_ROLLED_BACK: frozenset(),
    _S.FAILED: frozenset(),
    _S.ABORTED: frozenset(),
    _S.CANCELLED: frozenset(),
}


class Update:
    """One update. Subclass it and define :meth:`apply` (or use a ready-made update).

    ``threads`` are the threads that must be suspended while the update is applied (the
    manager's threads when it names none). ``max_tries`` and ``sleep_time`` are its patience for
    alterability (also given to the lowlevel waits it calls; ``set_max_tries`` and
    ``set_sleep_time`` are the original's setters); ``timeout``, if set, bounds each wait in
    seconds instead.
    """

    max_tries: int = 10
    sleep_time: float = 0.1
    timeout: float | None = None
    #: When alterability is not reached within the patience: "postpone" (the original's meaning:
    #: try again later, after the other queued updates, with back-off, at most
    #: ``max_postponements`` times before failing with UpdateTimeoutError) or "fail" (at once).
    on_timeout: Literal["postpone", "fail"] = "postpone"
    max_postponements: int = 10
    #: How threads are suspended: "anywhere" (at a static update point if they reach one within
    #: a short grace, else wherever they are) or "points" (static update points only).
    suspension: Literal["anywhere", "points"] = "anywhere"
    #: True for a ``RevertUpdate`` only: left out of the order :func:`applied_after` tells.
    is_revert: bool = False

    def __init__(self, name: str | None = None, threads: Iterable[threading.Thread] | None = None,
                 max_tries: int | None = None, sleep_time: float | None = None,
                 timeout: float | None = None) -> None:
        self.name: str = name or type(self).__name__
        self.threads: list[threading.Thread] = list(threads or [])
        if max_tries is not None:
            self.max_tries = max_tries
        if sleep_time is not None:
            self.sleep_time = sleep_time
        if timeout is not None:
            self.timeout = timeout
        self._state = UpdateState.PENDING
        self.journal = Journal(self.name)
        self.error: BaseException | None = None  # the exception that ended it, if any
        self.tries = 0  # alterability checks made
        self.postponements = 0
        self.requires: tuple[Update, ...] = ()  # set by add_update(requires=...)
        self.times: dict[str, float] = {}  # step name -> time.monotonic() when it ended
        self.pause: float | None = None  # seconds the threads were held
        #: its place in the order updates were applied
        self._applied_number: int | None = None

    # -- the original's setters ----------------------------------------------------------------

    def set_max_tries(self, max_tries: int) -> None:
        """Set how many alterability tries make up the patience (a positive int)."""
        if isinstance(max_tries, bool) or not isinstance(max_tries, int):
            raise PymoultTypeError(f"max_tries must be a positive int, got {max_tries!r}")
        if max_tries < 1:
            raise PymoultValueError(f"max_tries must be a positive int, got {max_tries!r}")
        self.max_tries = max_tries

    def set_sleep_time(self, sleep_time: float) -> None:
        """Set the seconds between two alterability tries (a number >= 0)."""
        self.sleep_time = check_timeout(sleep_time, "sleep_time")

    # -- the lifecycle: override what you need ---------------------------------------------------

    def check_requirements(self) -> Literal["yes", "no", "never"]:
        """"yes" to go on, "no" to be postponed (retried later), "never" to be aborted."""
        return "yes"

    def preupdate_setup(self) -> None:
        """Runs once, before waiting for alterability."""

    def suspended_threads(self) -> list[threading.Thread]:
        """The threads this update suspends: its ``threads``, less the calling thread (a polling
        manager's driver is at a safe place by definition: it is calling the manager)."""
        me = threading.current_thread()
        return [thread for thread in self.threads if thread is not me and thread.is_alive()]

    def check_alterability(self) -> bool:
        """One non-blocking try (polling managers): True when the update may be applied now."""
        threads = self.suspended_threads()
        if not threads:
            return True
        for thread in threads:
            if not alterability.threadsSuspended([thread]):
                alterability.suspend_thread(thread, anywhere=self.suspension == "anywhere")
        return alterability.threadsSuspended(threads)

    def wait_alterability(self) -> bool:
        """Block until the update may be applied (blocking managers); False when given up."""
        threads = self.suspended_threads()
        if not threads:
            return True
        with alterability.patience(self.max_tries, self.sleep_time):
            return alterability.suspendThreads(threads, timeout=self.timeout,
                                               anywhere=self.suspension == "anywhere")

    def clean_failed_alterability(self) -> None:
        """Undo what waiting for alterability set up (release the threads)."""
        if self.threads:
            alterability.cleanFailedStaticPoints(self.threads)

    def why_not_alterable(self) -> str:
        """A short text saying what kept the update from being alterable (for its timeout
        error): the threads not suspended, and where they run."""
        waiting = alterability.whyNotSuspended(self.suspended_threads())
        return "; ".join(f"thread {name!r} not suspended: {why}" for name, why in waiting.items())

    def watched(self) -> list[types.ModuleType | type]:
        """The namespaces (modules, classes) whose changes made without Pymoult's mechanisms by
        ``preupdate_setup`` and ``apply`` are journaled too (see the module notes). By default:
        the modules and classes among the update's attributes, one container or object deep,
        and the classes those modules define. Override to name others."""
        return _namespaces_in(vars(self).values())

    def apply(self) -> None:
        """Change the program. Every subclass must define it."""
        raise UpdateDefinitionError(f"{type(self).__name__} does not define apply()")

    def preresume_setup(self) -> None:
        """Runs after apply, before the threads are resumed."""

    def resume(self) -> None:
        """Release the threads held for the update."""
        if self.threads:
            alterability.resumeSuspendedThreads(self.threads)

    def check_over(self) -> bool:
        """One non-blocking try: True when the update's effects are complete."""
        return True

    def wait_over(self) -> bool:
        """Block until the update's effects are complete."""
        return True

    def cleanup(self) -> None:
        """Runs last, once the update is over."""

    def pause_hook(self) -> None:
        """Called when the threads have just been paused for the update."""

    def resume_hook(self) -> None:
        """Called when the threads have just been resumed."""

    # -- bookkeeping -------------------------------------------------------------------------------

    @property
    def state(self) -> UpdateState:
        """Where the update is in its lifecycle (an :class:`UpdateState`)."""
        return self._state

    @state.setter
    def state(self, new: UpdateState) -> None:
        if not isinstance(new, UpdateState):
            raise PymoultTypeError(f"an update's state is an UpdateState, got {new!r}")
        old = self._state
        if new is not old and new not in TRANSITIONS[old]:
            raise LifecycleError(f"{self.name!r} cannot go from {old.value!r} to {new.value!r}")
        self._state = new
        if new is UpdateState.APPLIED and old is not UpdateState.APPLIED:
            mark_applied(self)
        elif old is UpdateState.APPLIED and new is not UpdateState.APPLIED:
            _mark_unapplied(self)

    def mark(self, step: str) -> None:
        self.times[step] = time.monotonic()

    def status(self) -> UpdateStatus:
        """What the update is doing now, as a frozen :class:`UpdateStatus` (safe to call from
        any thread: each field is read once)."""
        state = self._state
        began = self.times.get("setup")
        timeout = self.timeout
        progress = self.journal.progress  # replaced whole by the journal, never changed
        return UpdateStatus(
            name=self.name, state=state.value, tries=self.tries, max_tries=self.max_tries,
            postponements=self.postponements,
            waited=round(time.monotonic() - began, 3)
            if state is UpdateState.WAITING and began is not None else None,
            patience=timeout if timeout is not None else self.max_tries * self.sleep_time,
            progress=None if progress is None else types.MappingProxyType(dict(progress)))

    def __repr__(self) -> str:
        extra = f" tries={self.tries}" if self.tries else ""
        if self.error is not None:
            extra += f" error={self.error!r}"
        return f"<{type(self).__name__} {self.name!r} state={self.state.value}{extra}>"


@dataclasses.dataclass(frozen=True)
class UpdateStatus:
    """A snapshot of an update (:meth:`Update.status`), as ``pymoult status`` shows it.

    ``state`` is the :class:`UpdateState`'s value. ``tries``, ``max_tries`` and
    ``postponements`` count its attempts at alterability; while it waits for it, ``waited`` is
    how long this attempt has waited (s, else None) and ``patience`` its budget (``timeout``,
    else ``max_tries`` x ``sleep_time``); ``progress`` is how far the mechanism working
    through objects got (``{"step", "done", "total"}``, the last one reported, or None).
    """

    name: str
    state: str
    tries: int
    max_tries: int
    postponements: int
    waited: float | None
    patience: float
    progress: types.MappingProxyType[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if self.progress is not None:
            values["progress"] = dict(self.progress)
        return values


def _is_program_namespace(value: object) -> bool:
    if isinstance(value, types.ModuleType):
        name = value.__name__
        return not (name in sys.builtin_module_names or name == "pymoult" or
                    name.startswith("pymoult."))
    return isinstance(value, type) and bool(value.__flags__ & _HEAPTYPE) and \
        not str(getattr(value, "__module__", "")).startswith("pymoult")


_HEAPTYPE = 1 << 9


def _namespaces_in(values: Iterable[object], depth: int = 2) -> list[types.ModuleType | type]:
    """Modules and (heap) classes among ``values``, looking ``depth`` containers or objects deep,
    plus the classes defined in the modules found."""
    found: list[types.ModuleType | type] = []
    seen: set[int] = set()
    todo = [(value, 0) for value in values]
    while todo:
        value, level = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, (types.ModuleType, type)) and _is_program_namespace(value):
            found.append(value)
            if isinstance(value, types.ModuleType):
                found.extend(item for item in list(vars(value).values())
                             if isinstance(item, type) and _is_program_namespace(item)
                             and item.__module__ == value.__name__)
            continue
        if level >= depth or isinstance(value, (str, bytes, type, types.ModuleType,
                                                types.FunctionType)):
            continue
        items: list[object]
        if isinstance(value, dict):
            items = list(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
        else:
            try:
                items = list(object.__getattribute__(value, "__dict__").values())
            except (AttributeError, TypeError):
                continue
        todo.extend((item, level + 1) for item in items)
    return found


def has_setup(update: Update) -> bool:
    """Whether ``update`` has a ``preupdate_setup`` of its own (its class's, or one set on it),
    not :class:`Update`'s, which does nothing."""
    return getattr(update.preupdate_setup, "__func__", None) is not Update.preupdate_setup


def check_definition(update: object) -> None:
    """Raise ``UpdateDefinitionError`` now if ``update`` cannot run (at ``add_update`` time)."""
    if not isinstance(update, Update):
        raise UpdateDefinitionError(f"expected an Update, got {update!r}")
    if type(update).apply is Update.apply:
        raise UpdateDefinitionError(f"{type(update).__name__} does not define apply()")
    if not isinstance(update.max_tries, int) or isinstance(update.max_tries, bool) \
            or update.max_tries < 1:
        raise UpdateDefinitionError(f"{update!r}: max_tries must be a positive int, "
                                    f"got {update.max_tries!r}")
    if update.state is not UpdateState.PENDING:
        raise UpdateDefinitionError(f"{update!r} was already submitted")
    if update.on_timeout not in ("fail", "postpone"):
        raise UpdateDefinitionError(f"{update!r}: on_timeout must be 'fail' or 'postpone', "
                                    f"got {update.on_timeout!r}")
    if update.suspension not in ("anywhere", "points"):
        raise UpdateDefinitionError(f"{update!r}: suspension must be 'anywhere' or 'points', "
                                    f"got {update.suspension!r}")


#: How many names :func:`applied_update_names` lists (the most recent); :func:`isApplied`
#: answers for every name ever applied (counted per distinct name).
APPLIED_NAMES_KEPT = 500
#: How many of the updates applied last (and not reverted) :func:`applied_after` can tell
#: apart; an older one is refused a revert (:class:`~pymoult.highlevel.revert.RevertUpdate`).
APPLIED_ORDER_KEPT = 10_000
_applied_names: collections.deque[str] = collections.deque(maxlen=APPLIED_NAMES_KEPT)
#: name -> updates of that name applied, not reverted
_applied_counts: collections.Counter[str] = collections.Counter()
#: (sequence number, name) of the updates applied and not reverted, in order
_applied_order: list[tuple[int, str]] = []
_applied_numbers = itertools.count()
_applied_lock = threading.Lock()


def mark_applied(update: Update) -> None:
    """Record that ``update`` was applied (its state setter calls it): :func:`isApplied` by
    name, and the order :func:`applied_after` tells."""
    with _applied_lock:
        _applied_names.append(update.name)
        _applied_counts[update.name] += 1
        if update.is_revert:
            return
        number = next(_applied_numbers)
        _applied_order.append((number, update.name))
        update._applied_number = number
        if len(_applied_order) > APPLIED_ORDER_KEPT:
            del _applied_order[: len(_applied_order) - APPLIED_ORDER_KEPT]


def _mark_unapplied(update: Update) -> None:
    with _applied_lock:
        if _applied_counts[update.name] > 1:
            _applied_counts[update.name] -= 1
        else:
            _applied_counts.pop(update.name, None)
        number = getattr(update, "_applied_number", None)
        for index in range(len(_applied_order) - 1, -1, -1):
            if _applied_order[index][0] == number:
                del _applied_order[index]
                break


def applied_after(update: Update) -> list[str] | None:
    """The names of the updates applied in this process after ``update`` (an applied update)
    and not reverted since, oldest first; None when ``update`` is too old to tell (more than
    ``APPLIED_ORDER_KEPT`` updates were applied after it) or is not applied."""
    with _applied_lock:
        number = getattr(update, "_applied_number", None) \
            if update.state is UpdateState.APPLIED else None
        if number is None or not _applied_order or _applied_order[0][0] > number:
            return None
        return [name for each, name in _applied_order if each > number]


def applied_update_names() -> list[str]:
    """The names of the last ``APPLIED_NAMES_KEPT`` updates applied in this process, oldest
    first (a name may repeat)."""
    with _applied_lock:
        return list(_applied_names)


def isApplied(update: Update | str) -> bool:

    """True once ``update`` has been applied (and not rolled back). ``update`` is an
    :class:`Update`, or an update's *name*, as in the original Pymoult (``isApplied("func")``:
    some update of that name was applied in this process)."""
    if isinstance(update, str):
        with _applied_lock:
            return update in _applied_counts
    if not isinstance(update, Update):
        raise PymoultTypeError(f"isApplied takes an update or an update's name, got {update!r}")
    return update.state is UpdateState.APPLIED
