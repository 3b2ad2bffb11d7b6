"""Alterability: knowing when the program is in a state where an update may be applied.

Three criteria, as in Pymoult:

*Static update points.* The application marks safe points with :func:`staticUpdatePoint`. A
manager asks threads to park at their next point (:func:`setupWaitStaticPoints`), waits for them
(:func:`waitStaticPoints`, woken by the threads themselves as they park), applies, and resumes
them.
An idle point costs one test of a module global (see ``benchmarks/``).

*Suspension anywhere.* As the original Pymoult (which suspended threads at the VM level), a
thread can be suspended wherever it is, with no update point: :func:`suspend_thread`,
:func:`suspendThreads`. A thread that reaches a static point within a short grace parks there;
otherwise a trap (a per-thread trace) parks it at its next event in application code, or it
counts as suspended at once when it is blocked in a C call or a ``threading`` wait (it parks
before running more application code when the call returns). See ``pymoult._suspension`` for
where a thread never parks (inside the import system, ``logging``, ``threading``, Pymoult) and
what suspension cannot promise.

*Quiescence.* A function is quiescent when no thread is running it. Stacks are read with
``sys._current_frames()``, plus the suspended sleeping continuation of each DSU_Thread (a suspended
greenlet's frames are not in ``_current_frames``). A stack check is a snapshot: it stays true only
while the threads that could enter the function are suspended, so the check functions suspend the
threads they are given first, and leave them suspended when the answer is yes (resume them with
:func:`resumeSuspendedThreads` after the update). With no threads given, the answer holds only
inside a stop-the-world window (``pymoult.lowlevel.world``).

*Forced quiescence.* :func:`setupForceQuiescence` holds new calls of a module's function at its
entry (the module attribute is replaced by a gate) until the calls already running have left; the
update then applies and :func:`cleanForceQuiescence` releases the held callers into the new
version. Recursive calls from a thread already inside the function pass the gate (holding them
would deadlock). Calls through references taken before the gate was installed (``from m import f``,
a stored callback) are not held; they are seen by the stack check, but one may start between the
check and the apply unless both run in a stop-the-world window.

Waits take their patience from :func:`patience` (set by the calling update: ``max_tries`` tries
``sleep_time`` apart) or from ``DEFAULT_MAX_TRIES`` / ``DEFAULT_SLEEP_TIME``; an explicit
``timeout`` overrides. Waits return a bool; they raise only for misuse (``DeadlockDetectedError``
when a thread would wait for itself).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Union

from .. import _parking, _stacks, _suspension
from .._parking import check_timeout, control_for, staticUpdatePoint, update_point
from .._stacks import (Stacks, class_codes, codes_of, codes_of_all, forget_stacks, library_of,
                       running_code, thread_stacks)
from ..errors import DeadlockDetectedError, PymoultTypeError, PymoultValueError
from .journal import current_journal, set_attribute

#: What can be found running: a function (a method, a wrapper, ``functools.partial``...), a
#: code object, a static or class method, a property (its accessors).
FunctionLike = Union[Callable[..., Any], types.CodeType, staticmethod, classmethod, property]
#: Threads to act on: any iterable of threads (None, where accepted: every thread).
Threads = Iterable[threading.Thread]

__all__ = [
    "TornCallGuard",
    "stacks_not_at_points",
    "staticUpdatePoint",
    "update_point",
    "patience",
    "DEFAULT_MAX_TRIES",
    "DEFAULT_SLEEP_TIME",
    "suspend_thread",
    "resume_thread",
    "wait_thread_suspended",
    "suspendThreads",
    "threadsSuspended",
    "whyNotSuspended",
    "runningFunctions",
    "thread_frames",
    "setupWaitStaticPoints",
    "waitStaticPoints",
    "checkStaticPointsReached",
    "cleanFailedStaticPoints",
    "resumeSuspendedThreads",
    "isFunctionInStack",
    "isFunctionInAnyStack",
    "isAnyCodeInAnyStack",
    "isClassInAnyStack",
    "checkQuiescenceOfFunction",
    "checkQuiescenceOfFunctions",
    "forget_stacks",
    "waitQuiescenceOfFunction",
    "waitQuiescenceOfFunctions",
    "setupForceQuiescence",
    "waitForceQuiescence",
    "checkForceQuiescence",
    "cleanForceQuiescence",
    "cleanFailedForceQuiescence",
    "ForceQuiescenceWatcher",
    "collect_watchers",
]

DEFAULT_MAX_TRIES = 10
DEFAULT_SLEEP_TIME = 0.1

_patience = threading.local()


@contextlib.contextmanager
def patience(max_tries: int | None = None, sleep_time: float | None = None) -> Iterator[None]:
    """Within the block, waits in this thread make ``max_tries`` tries ``sleep_time`` apart.

    Updates set it around their steps so that the lowlevel waits they call inherit their
    ``max_tries`` and ``sleep_time``. None keeps the enclosing (or default) value.
    """
    if max_tries is not None and (isinstance(max_tries, bool) or not isinstance(max_tries, int)
                                  or max_tries < 1):
        raise PymoultValueError(f"max_tries must be a positive int, got {max_tries!r}")
    sleep_time = check_timeout(sleep_time, "sleep_time")
    saved = getattr(_patience, "value", None)
    tries, sleep = _current_patience()
    _patience.value = (max_tries or tries, sleep if sleep_time is None else sleep_time)
    try:
        yield
    finally:
        _patience.value = saved


def _current_patience() -> tuple[int, float]:
    return getattr(_patience, "value", None) or (DEFAULT_MAX_TRIES, DEFAULT_SLEEP_TIME)


def _deadline(timeout: float | None) -> float:
    """Absolute deadline for a wait: ``timeout`` if given, else the current patience."""
    timeout = check_timeout(timeout)
    if timeout is None:
        tries, sleep = _current_patience()
        timeout = tries * sleep
    return time.monotonic() + timeout


def _threads_list(threads: Threads | None) -> list[threading.Thread]:
    if threads is None:
        return []
    if isinstance(threads, threading.Thread):
        raise PymoultTypeError(f"expected a list of threads, got the thread {threads!r}")
    if isinstance(threads, (str, bytes)) or not hasattr(threads, "__iter__"):
        raise PymoultTypeError(f"expected a list of threads, got {threads!r}")
    result = list(threads)
    for thread in result:
        if not isinstance(thread, threading.Thread):
            raise PymoultTypeError(f"expected threads, got {thread!r}")
    return result


def _refuse_self_wait(threads: Iterable[threading.Thread], what: str) -> None:
    me = threading.get_ident()
    for thread in threads:
        if thread.ident == me:
            raise DeadlockDetectedError(
                f"{thread.name!r} cannot {what}: it would wait for itself to reach an update point")


# -- suspending single threads (DSU_Thread methods call the same controls) ---------------------


def suspend_thread(thread: threading.Thread, anywhere: bool = True,
                   grace: float | None = None) -> None:
    """Ask any thread (a DSU_Thread, a plain Thread, the main thread) to suspend. Returns at once.

    It parks at its next ``staticUpdatePoint``; with ``anywhere`` (the default, as the original
    Pymoult suspended threads at the VM level), a thread that has not reached a point within
    ``grace`` seconds (``pymoult._parking.POINT_GRACE``, 20 ms) is suspended wherever it is: it
    parks at its next event in application code, or counts as suspended at once when it is
    blocked (see "Suspension anywhere" in docs/threading.md). ``anywhere=False`` waits for a
    point only.
    """
    control_for(thread).request_suspend(anywhere=anywhere, grace=grace)


def resume_thread(thread: threading.Thread) -> bool:
    """Release ``thread`` from its update point; False if it was neither parked nor asked to."""
    control = control_for(thread, create=False)
    return False if control is None else control.resume()


def wait_thread_suspended(thread: threading.Thread, timeout: float | None = None) -> bool:
    """Block until ``thread`` is suspended (after :func:`suspend_thread`): parked at an update
    point or, if suspended anywhere, parked or blocked where it will park; False on timeout, or
    if it has ended or was never asked to suspend.

    A plain thread that ends while waited on is noticed within 50 ms (it gives no signal when
    it ends), a DSU_Thread at once.
    """
    control = control_for(thread, create=False)
    if control is None:
        return False
    return control.wait_parked(timeout)


def suspendThreads(threads: Threads, timeout: float | None = None,
                   anywhere: bool = True) -> bool:
    """Suspend every thread of ``threads`` (see :func:`suspend_thread`) and block until all are
    suspended: True then; False when the patience (or ``timeout``) runs out or a thread ended,
    leaving the requests in place (release them with :func:`resumeSuspendedThreads`). Raises
    ``DeadlockDetectedError`` if the calling thread is one of ``threads``."""
    threads = _threads_list(threads)
    _refuse_self_wait(threads, "suspend itself and wait")
    deadline = _deadline(timeout)
    if not all(thread.is_alive() for thread in threads):
        return False
    controls = [control_for(thread) for thread in threads]  # every thread checked first
    for control in controls:
        control.check_alive("suspend")
    for control in controls:
        control.request_suspend(anywhere=anywhere)
    for control in controls:
        if not control.wait_parked(max(0.0, deadline - time.monotonic())):
            return False
    return True


def threadsSuspended(threads: Threads) -> bool:
    """True when every thread of ``threads`` is suspended (does not wait)."""
    return all(_is_suspended(thread) for thread in _threads_list(threads))


def _is_suspended(thread: threading.Thread) -> bool:
    control = control_for(thread, create=False)
    return control is not None and control.suspended()


def whyNotSuspended(threads: Threads) -> dict[str, str]:
    """``{thread name: where it runs}`` for the threads of ``threads`` not suspended yet."""
    return {thread.name: _suspension.why_not_suspended(thread)
            for thread in _threads_list(threads) if thread.is_alive() and not _is_suspended(thread)}


# -- static update points ------------------------------------------------------------------------


def setupWaitStaticPoints(threads: Threads) -> None:
    """Ask each thread to park at its next static update point (returns at once)."""
    threads = _threads_list(threads)
    controls = [control_for(thread) for thread in threads]  # every thread checked first
    for control in controls:
        control.check_alive("suspend")
    for control in controls:
        control.request_suspend()


def checkStaticPointsReached(threads: Threads) -> bool:
    """True when every thread is parked at a static update point (does not wait)."""
    return all(_is_parked(thread) for thread in _threads_list(threads))


def _is_parked(thread: threading.Thread) -> bool:
    control = control_for(thread, create=False)
    return control is not None and control.parked


def waitStaticPoints(threads: Threads, timeout: float | None = None) -> bool:
    """Block until every thread is parked at a static update point.

    Threads not yet asked to park are asked. Returns True when all are parked; False when the
    patience (or ``timeout``) runs out or a thread ended, leaving the requests in place (call
    :func:`cleanFailedStaticPoints` to withdraw them). The waiting thread is woken by the threads
    as they park. Raises ``DeadlockDetectedError`` if the calling thread is
    one of ``threads``.
    """
    threads = _threads_list(threads)
    _refuse_self_wait(threads, "wait for static points")
    deadline = _deadline(timeout)
    if not all(thread.is_alive() for thread in threads):
        return False  # an ended (or unstarted) thread never reaches a point
    setupWaitStaticPoints([t for t in threads if not _suspend_asked(t)])
    for thread in threads:
        if not control_for(thread).wait_parked(max(0.0, deadline - time.monotonic())):
            return False
    return True


def _suspend_asked(thread: threading.Thread) -> bool:
    control = control_for(thread, create=False)
    return control is not None and (control.suspend_requested or control.parked)


def cleanFailedStaticPoints(threads: Threads) -> None:
    """Withdraw the park requests of ``threads`` and release those already parked."""
    for thread in _threads_list(threads):
        resume_thread(thread)


def resumeSuspendedThreads(threads: Threads | None = None) -> list[threading.Thread]:
    """Release ``threads`` from their update points; with no threads, every parked or
    park-requested thread. Returns the threads released."""
    threads = _threads_list(threads)
    if not threads:
        _parking.prune_dead_threads()
        with _parking._registry_lock:
            threads = [c.thread for c in _parking._controls.values()]
    return [thread for thread in threads if resume_thread(thread)]


# -- quiescence ---------------------------------------------------------------------------------


class TornCallGuard:
    """What makes a frame unsafe when several functions change together: a caller that could
    see two versions of the update. A frame is unsafe when it names two of the changing
    functions (``decode(encode(x))``: it may have called the old ``encode`` and be about to call
    the new ``decode``), or runs one of them and names another. Names are what a code object
    looks up (``co_names``: globals and attributes), so a caller through ``module.f`` or
    ``self.f`` counts. Frames of the standard library and of Pymoult are not callers of the
    application's functions (``threading``'s bootstrap names ``run``). A frame's verdict is
    cached by code object for the guard's life (one update)."""

    __slots__ = ("names", "code_ids", "_verdicts")

    STDLIB, SITE, PACKAGE = _stacks.STDLIB, _stacks.SITE, _stacks.PACKAGE

    def __init__(self, codes: Collection[types.CodeType]) -> None:
        self.names = frozenset(code.co_name for code in codes if not code.co_name.startswith("<"))
        self.code_ids = {id(code) for code in codes}
        self._verdicts: dict[int, tuple[bool, types.CodeType]] = {}

    def unsafe(self, code: types.CodeType) -> bool:
        known = self._verdicts.get(id(code))
        if known is None:
            count = len(self.names.intersection(code.co_names))
            count += id(code) in self.code_ids
            verdict = count >= 2 and library_of(code.co_filename) is None
            self._verdicts[id(code)] = (verdict, code)  # the code kept: its id stays unique
            return verdict
        return known[0]

    def __bool__(self) -> bool:
        return len(self.names) > 1 or bool(self.names and self.code_ids)

    def reason(self, code: types.CodeType, what: str = "change together") -> str:
        """Why a frame running ``code`` (one :meth:`unsafe` found, or one running a changing
        function) holds the update back, in a sentence naming it and what it calls."""
        name = getattr(code, "co_qualname", code.co_name)
        called = sorted(self.names.intersection(code.co_names))
        if id(code) in self.code_ids and not called:
            return f"{name}() is running"
        return (f"{name}() ({os.path.basename(code.co_filename)}) is running and calls "
                f"{', '.join(called)}, which {what}: it could see both versions")


def stacks_not_at_points(
        threads: Iterable[threading.Thread] | None = None) -> dict[int, list[types.FrameType]]:
    """The stacks of the threads (None: all) that are not where their code said an update may
    come: parked at a static update point, or waiting inside Pymoult (for an update it asked
    for: ``apply_update``, a future's result). Their frames are safe by their author's choice.
    A thread suspended anywhere else (trapped, dormant, running) may be in the middle of
    anything."""
    stacks = thread_stacks(threads)
    controls = {t.ident: control_for(t, create=False)
                for t in (threading.enumerate() if threads is None else threads)
                if t.ident in stacks}
    for ident, tops in list(stacks.items()):
        control = controls.get(ident)
        trapped = control is not None and control.parked and not control.in_point
        if not trapped and _waits_in_pymoult(tops[0]):
            del stacks[ident]
    return stacks


def _waits_in_pymoult(frame: types.FrameType | None) -> bool:
    """Whether the innermost frame of a thread that is not the standard library's is Pymoult's
    (a point, a wait for an update)."""
    while frame is not None:
        library = library_of(frame.f_code.co_filename)
        if library != "stdlib":
            return library == "pymoult"
        frame = frame.f_back
    return False


def _code_in_stacks(codes: Collection[types.CodeType], stacks: Stacks) -> bool:
    """True if a frame running one of ``codes`` is in any of ``stacks``."""
    return running_code(codes, stacks) is not None


def runningFunctions(funcs: Iterable[FunctionLike],
                     threads: Threads | None = None) -> list[tuple[str, str]]:
    """``[(thread name, function name)]`` for each of ``funcs`` running in a thread's stack
    (``threads``: None for every thread), for messages saying why an update waits."""
    names: dict[int, str] = {}
    for func in funcs:
        for code in codes_of(func):
            names[id(code)] = getattr(func, "__qualname__", None) or code.co_name
    by_ident = {t.ident: t.name for t in threading.enumerate()}
    found = []
    stacks = thread_stacks(None if threads is None else _threads_list(threads))
    for ident, tops in stacks.items():
        for top in tops:
            frame: types.FrameType | None = top
            while frame is not None:
                name = names.get(id(frame.f_code))
                if name is not None:
                    pair = (by_ident.get(ident, str(ident)), name)
                    if pair not in found:
                        found.append(pair)
                frame = frame.f_back
    return found


def thread_frames(threads: Threads | None = None) -> list[tuple[str, types.FrameType]]:
    """``[(thread name, frame)]``: every frame of the threads' stacks (None: every thread;
    a DSU_Thread's suspended continuation included), each thread's from its innermost frame
    out (the calling thread's from the caller of this function). A snapshot: it holds while
    the threads are suspended (or inside a stop-the-world window)."""
    by_ident = {t.ident: t.name for t in threading.enumerate()}
    me, caller = threading.get_ident(), sys._getframe(1)
    found: list[tuple[str, types.FrameType]] = []
    for ident, tops in thread_stacks(None if threads is None else
                                      _threads_list(threads)).items():
        name = by_ident.get(ident, str(ident))
        if ident == me:  # from the caller out, not the frames reading the stacks
            tops = [caller] + tops[1:]
        for top in tops:
            frame: types.FrameType | None = top
            while frame is not None:
                found.append((name, frame))
                frame = frame.f_back
    return found


def isFunctionInStack(func: FunctionLike, thread: threading.Thread) -> bool:
    """True if ``func`` is running in ``thread`` (including its sleeping continuation)."""
    if not isinstance(thread, threading.Thread):
        raise PymoultTypeError(f"expected a thread, got {thread!r}")
    return _code_in_stacks(codes_of(func), thread_stacks([thread]))


def isFunctionInAnyStack(func: FunctionLike, threads: Threads | None = None) -> bool:
    """True if ``func`` is running in any of ``threads`` (None: in any thread)."""
    threads = None if threads is None else _threads_list(threads)
    return _code_in_stacks(codes_of(func), thread_stacks(threads))


def isAnyCodeInAnyStack(codes: Iterable[FunctionLike], threads: Threads | None = None) -> bool:
    """True if a frame of any of the code objects (or functions) ``codes`` is running."""
    threads = None if threads is None else _threads_list(threads)
    return _code_in_stacks(codes_of_all(codes), thread_stacks(threads))


def isClassInAnyStack(cls: type, threads: Threads | None = None) -> bool:
    """True if any method defined in ``cls`` itself (functions, static and class methods,
    property accessors) is running in any of ``threads`` (None: any thread)."""
    threads = None if threads is None else _threads_list(threads)
    return _code_in_stacks(class_codes(cls), thread_stacks(threads))


def checkQuiescenceOfFunction(func: FunctionLike, threads: Threads | None = None,
                              anywhere: bool = True) -> bool:
    """One non-blocking try at quiescence of ``func``; see :func:`checkQuiescenceOfFunctions`."""
    return _check_quiescence(codes_of(func), _threads_list(threads), anywhere)


def checkQuiescenceOfFunctions(funcs: Iterable[FunctionLike], threads: Threads | None = None,
                               anywhere: bool = True) -> bool:
    """One non-blocking try at quiescence of every function in ``funcs``.

    ``threads`` are asked to suspend (wherever they are: see :func:`suspend_thread`); until all
    are suspended the answer is False (the requests stay, so the next try may succeed). Once they
    are, every thread's stack is checked: if a function is running, the threads are resumed and
    the answer is False; otherwise it is True and the threads stay suspended, so the functions
    cannot be entered before the update is applied (resume them afterwards). With no threads,
    a snapshot of every stack.
    """
    return _check_quiescence(codes_of_all(funcs), _threads_list(threads), anywhere)


def _live(threads: Iterable[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threads if thread.is_alive()]


def _check_quiescence(codes: Collection[types.CodeType], threads: list[threading.Thread],
                      anywhere: bool = True) -> bool:
    live: list[threading.Thread] = []
    waiting: list[threading.Thread] = []
    for thread in threads:
        control = control_for(thread, create=False)
        if control is not None and control.parked:
            live.append(thread)  # parked: alive and suspended, nothing to ask (the usual case)
        elif thread.is_alive():  # an ended thread cannot enter the functions any more
            live.append(thread)
            waiting.append(thread)
    if waiting:
        for thread in waiting:
            if not _suspend_asked(thread):
                control_for(thread).request_suspend(anywhere=anywhere)
        if not all(_is_suspended(thread) for thread in waiting):
            return False
    if _code_in_stacks(codes, thread_stacks(from_points=True)):
        cleanFailedStaticPoints(live)
        return False
    return True


def waitQuiescenceOfFunction(func: FunctionLike, threads: Threads | None = None,
                             timeout: float | None = None, anywhere: bool = True) -> bool:
    """Block until ``func`` is quiescent; see :func:`waitQuiescenceOfFunctions`."""
    return wait_quiescence(codes_of(func), _threads_list(threads), timeout, anywhere)


def waitQuiescenceOfFunctions(funcs: Iterable[FunctionLike], threads: Threads | None = None,
                              timeout: float | None = None, anywhere: bool = True) -> bool:
    """Block until no function of ``funcs`` is running, trying up to the patience.

    Each try suspends ``threads`` (wherever they are, as the original Pymoult did: see
    :func:`suspend_thread`) and checks every stack; between failed tries the threads are resumed
    for ``sleep_time`` so that they can leave the functions. Returns True
    with ``threads`` left suspended, or False (threads resumed) when the patience or ``timeout`` is
    exhausted. ``DeadlockDetectedError`` if the caller is one of ``threads``.
    """
    return wait_quiescence(codes_of_all(funcs), _threads_list(threads), timeout, anywhere)


def wait_quiescence(codes: Collection[types.CodeType], threads: list[threading.Thread],
                    timeout: float | None, anywhere: bool = True,
                    unsafe: Callable[[], object] | None = None) -> bool:
    """Suspend ``threads``, then wait until no frame runs ``codes``; with ``unsafe``, until
    ``unsafe()`` (it looks at the stacks itself) gives None."""
    if unsafe is None:
        unsafe = functools.partial(running_code, codes, None)
    _refuse_self_wait(threads, "wait for quiescence")
    threads = _live(threads)
    _, sleep_time = _current_patience()
    deadline = _deadline(timeout)
    pause = threading.Event()
    try:
        while True:
            if threads and not suspendThreads(threads, max(0.0, deadline - time.monotonic()),
                                              anywhere=anywhere):
                cleanFailedStaticPoints(threads)
                return False
            if unsafe() is None:
                return True
            cleanFailedStaticPoints(threads)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            pause.wait(min(sleep_time, remaining))
    finally:  # the wait is over: let go of the stacks kept between its checks
        forget_stacks()


# -- forced quiescence ---------------------------------------------------------------------------


class _WatcherEvent(threading.Event):
    """An Event that knows the :class:`ForceQuiescenceWatcher` it belongs to."""

    def __init__(self, watcher: ForceQuiescenceWatcher) -> None:
        super().__init__()
        self.watcher = watcher


class ForceQuiescenceWatcher:
    """Holds new calls of ``module.<name>`` at a gate until the running calls have left.

    ``quiescent`` is set once no frame of the function is running outside the gate;
    ``can_continue`` releases the held callers, which then call the module's current binding
    (the new version if the update rebound it, else the original function, whose code an
    in-place update may have replaced).
    """

    def __init__(self, module: types.ModuleType, function: Callable[..., Any] | str) -> None:
        if not isinstance(module, types.ModuleType):
            raise PymoultTypeError(f"expected a module, got {module!r}")
        if isinstance(function, str):
            name = function
            if not hasattr(module, name):
                raise PymoultValueError(f"module {module.__name__!r} has no attribute {name!r}")
            original = getattr(module, name)
        else:
            original = function
            found: str | None = getattr(function, "__name__", None)
            if found is None or getattr(module, found, None) is not function:
                raise PymoultValueError(
                    f"{function!r} is not bound as {module.__name__}.{found}; pass its name")
            name = found
        if not callable(original):
            raise PymoultTypeError(f"{module.__name__}.{name} is not callable: {original!r}")
        self.module = module
        self.name = name
        self.original = original
        self.codes = codes_of(original)
        self.quiescent = _WatcherEvent(self)
        self.can_continue = _WatcherEvent(self)
        self.held = 0  # callers waiting at the gate now
        self._lock = threading.Condition(threading.Lock())
        self.gate = self._make_gate()
        self.installed = False

    def _make_gate(self) -> Callable[..., Any]:
        watcher = self

        @functools.wraps(self.original)
        def gate(*args: Any, **kwargs: Any) -> Any:
            if not watcher.can_continue.is_set() and not watcher._caller_inside():
                with watcher._lock:
                    watcher.held += 1
                    watcher._lock.notify_all()
                try:
                    watcher.can_continue.wait()
                finally:
                    with watcher._lock:
                        watcher.held -= 1
                        watcher._lock.notify_all()
            return watcher.target()(*args, **kwargs)

        gate.__pymoult_gate__ = self  # type: ignore[attr-defined]  # marks the gate
        return gate

    def _caller_inside(self) -> bool:
        frame: types.FrameType | None = sys._getframe(2)
        code_ids = {id(code) for code in self.codes}
        while frame is not None:
            if id(frame.f_code) in code_ids:
                return True
            frame = frame.f_back
        return False

    def wait_held(self, count: int, timeout: float | None = None) -> bool:
        """Block until exactly ``count`` callers wait at the gate; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self.held == count, timeout)

    def target(self) -> Callable[..., Any]:
        """What released callers run: the module's binding unless it is still the gate."""
        current = getattr(self.module, self.name, self.original)
        return self.original if current is self.gate else current

    def install(self) -> None:
        self._bind(self.gate)
        self.installed = True
        self.check()

    def _bind(self, value: object) -> None:
        """Bind ``module.<name>``, recorded in the update's journal when one is recording (a
        rollback then unbinds the gate, and the journal's watch of the module does not take the
        gate for a change made outside Pymoult)."""
        journal = current_journal()
        if journal is not None and journal.state == "open":
            set_attribute(self.module, self.name, value, journal)
        else:
            setattr(self.module, self.name, value)

    def check(self) -> bool:
        """Re-read every stack; set and return ``quiescent`` when no call is running."""
        if not self.quiescent.is_set():
            stacks = thread_stacks()
            if not _code_in_stacks(self.codes, stacks):
                self.quiescent.set()
        return self.quiescent.is_set()

    def release(self) -> None:
        """Let held callers go. If the module still binds the gate (the update did not rebind
        the name), the original function is bound again first."""
        if self.installed and getattr(self.module, self.name, None) is self.gate:
            self._bind(self.original)
        self.installed = False
        self.can_continue.set()

    def __repr__(self) -> str:
        state = "quiescent" if self.quiescent.is_set() else "waiting"
        if self.can_continue.is_set():
            state = "released"
        return (f"<ForceQuiescenceWatcher {self.module.__name__}.{self.name} {state} "
                f"held={self.held}>")


_collecting = threading.local()


@contextlib.contextmanager
def collect_watchers(
        into: list[ForceQuiescenceWatcher]) -> Iterator[list[ForceQuiescenceWatcher]]:
    """Within the block, every :class:`ForceQuiescenceWatcher` that the calling thread sets up
    is appended to the list ``into`` (managers use it to release gates an update left)."""
    outer = getattr(_collecting, "into", None)
    _collecting.into = into
    try:
        yield into
    finally:
        _collecting.into = outer


def setupForceQuiescence(
        module: types.ModuleType, function: Callable[..., Any] | str,
) -> tuple[threading.Event, threading.Event, ForceQuiescenceWatcher]:
    """Start holding new calls of ``module.function`` (a function or its name) at its entry.

    Returns ``(quiescent, can_continue, watcher)``: ``quiescent`` is an Event set once the calls
    already running have left; setting ``can_continue`` (through :func:`cleanForceQuiescence`)
    releases the held callers.
    """
    watcher = ForceQuiescenceWatcher(module, function)
    watcher.install()
    into = getattr(_collecting, "into", None)
    if into is not None:
        into.append(watcher)
    return watcher.quiescent, watcher.can_continue, watcher


def _watcher_of(event: object, what: str) -> ForceQuiescenceWatcher:
    watcher = getattr(event, "watcher", None)
    if not isinstance(watcher, ForceQuiescenceWatcher):
        raise PymoultTypeError(f"{what} must be an event returned by setupForceQuiescence, "
                               f"got {event!r}")
    return watcher


def checkForceQuiescence(quiescent: threading.Event) -> bool:
    """True once the running calls have left (re-reads the stacks; does not wait)."""
    return _watcher_of(quiescent, "quiescent").check()


def waitForceQuiescence(quiescent: threading.Event, timeout: float | None = None) -> bool:
    """Block until the running calls have left; False when the patience (or ``timeout``) runs
    out. This wait polls: calls already running give no signal when they return, so the stacks
    are re-read every ``sleep_time``."""
    watcher = _watcher_of(quiescent, "quiescent")
    _, sleep_time = _current_patience()
    deadline = _deadline(timeout)
    while not watcher.check():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        quiescent.wait(min(sleep_time, remaining))
    return True


def cleanForceQuiescence(can_continue: threading.Event) -> None:
    """After the update: release held callers into the module's current binding. If the update
    did not rebind the name, the original function is bound again."""
    _watcher_of(can_continue, "can_continue").release()


def cleanFailedForceQuiescence(can_continue: threading.Event, watcher: ForceQuiescenceWatcher,
                               module: types.ModuleType,
                               function: Callable[..., Any] | str) -> None:
    """The update was abandoned: bind the original function again and release held callers,
    which run the old version."""
    if _watcher_of(can_continue, "can_continue") is not watcher:
        raise PymoultValueError("can_continue and watcher come from different setups")
    if module is not watcher.module:
        raise PymoultValueError(f"{module!r} is not the module the watcher guards")
    if function not in (watcher.name, watcher.original):
        raise PymoultValueError(f"{function!r} is not the function the watcher guards")
    watcher.release()
