"""Live updates of a Dask cluster, through Dask's own mechanisms.

A module that the tasks of a ``distributed`` cluster run is updated on every worker process
(and on the scheduler's, when it has imported the module) while the workers keep their data in
memory and go on running tasks. Nothing of Pymoult's travels on its own: the steps are functions
run on chosen workers with ``Client.run`` (on the scheduler with ``Client.run_on_scheduler``),
and the versions are kept in a ``WorkerPlugin`` registered with ``Client.register_plugin``, so
that a worker that joins later is brought to the current version before it runs a task.

On each process the change is a :class:`~pymoult.highlevel.module_update.ModuleUpdate`, queued
on the process's own :class:`~pymoult.highlevel.managers.ThreadedManager` (``"pymoult-dask"``)
and applied at a safe point: once no thread of the process runs a function it changes. A task
running a changed function finishes on its version; a task that starts after the switch runs
the new one (``running_tasks="continue"`` switches at once instead, for tasks too long to wait
for). Objects in memory (the workers' data, module state) stay: functions and classes are
updated in place, so the old instances run the new methods. Dask reuses a result it holds
for the same key: a task submitted again with the same arguments (``pure=True``, the default)
gets the result computed before the update, as it would without one.

:func:`update_cluster` is the whole update in one call, in two phases: every target *prepares*
(the new version is compiled and evaluated on trial there: a version that does not compile or
raises, or a module missing there, fails with nothing changed anywhere), then the targets
*apply*: all at once, or as a rollout over listeners does (``pymoult.rollout``, whose stages,
halt and report it shares): a canary first, then waves, halting at the first target that fails
and undoing those that had applied, so the cluster stays on one version; the report has one
line per target and says whether the cluster is on the new version, the old one, or split.
:func:`undo_cluster` takes the last version of a module back out. The steps themselves
are public, per target: :class:`ClusterUpdate`'s
``prepare``, ``apply``, ``undo``, ``discard``, ``publish``, ``withdraw`` and ``converge`` each
return one :class:`TargetResult` per target (address, ok, one-line message), never a
traceback. One rollout at a time per cluster: the published versions are a single plugin,
registered again by each publication (the last one wins).

Each process keeps its last :data:`HISTORY` applied updates (their journals), which is what an
undo needs; :func:`revert_on_worker` is the one place an applied update is reverted (a
``RevertUpdate``: newest first in the process, whatever the module, at a safe point). The
processes need Pymoult installed (they import this module) and the module importable.

Requires ``distributed`` (``pip install 'pymoult[dask]'``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import hashlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
import types
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

try:
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
    from distributed.protocol import pickle as dask_pickle
except ImportError as _missing:  # pragma: no cover - exercised only without distributed
    raise ImportError("pymoult.delivery.dask_cluster needs Dask's distributed package: "
                      "pip install 'pymoult[dask]'") from _missing

from ..errors import (ListenerError, ModuleUpdateError, PymoultTypeError,
                      PymoultValueError)
from ..highlevel.managers import ThreadedManager, fetch_manager
from ..highlevel.module_update import ModuleUpdate
from ..highlevel.revert import RevertUpdate
from ..highlevel.updates import Update, UpdateState
from ..rollout import NEW, OLD, SPLIT, ProcessReport, RolloutReport, fleet_report, plan_stages, \
    run_stages

if TYPE_CHECKING:
    from ..highlevel.managers import Manager, UpdateFuture
    from ..rollout import StageCallback

__all__ = ["update_cluster", "undo_cluster", "cluster_versions", "cluster_workers",
           "ClusterUpdate",
           "ClusterReport", "TargetResult", "ModuleVersionsPlugin", "revert_on_worker",
           "published_versions", "SCHEDULER", "MANAGER_NAME", "PLUGIN_NAME", "HISTORY",
           "RUNNING_TASKS"]

logger = logging.getLogger("pymoult")

#: The name standing for the scheduler's process among the targets.
SCHEDULER = "scheduler"
#: The manager each process applies the updates with (started on first use).
MANAGER_NAME = "pymoult-dask"
#: The name the worker plugin is registered under (one for every module).
PLUGIN_NAME = "pymoult-module-versions"
#: Applied updates each process keeps for an undo, and versions of a module the plugin keeps.
HISTORY = 20
#: Prepared updates each process keeps (older ones are dropped: prepare again).
PREPARED_KEPT = 8
#: Seconds a step may take on a target beyond the update's own patience before it is reported
#: as not finished (the apply window, the trial, the manager's queue).
STEP_MARGIN = 30.0
#: What an apply does about the tasks running a function it changes: "wait" until none does
#: (they finish on the old version, then the switch), or "continue": switch at once, their
#: running calls finish on the old code and whatever they call next is the new version.
RUNNING_TASKS = ("wait", "continue")
#: Seconds between two looks at the stacks while an update waits for a safe point.
QUIESCENCE_INTERVAL = 0.01
#: Longest message of a target result, in characters.
MESSAGE_LIMIT = 400

#: ``transformers`` and ``builders`` of a ``ModuleUpdate``: a callable by class name.
ByClassName = Mapping[str, Callable[..., Any]]


class VersionRecord(TypedDict):
    """A published version, as :class:`ModuleVersionsPlugin` keeps it."""

    version: str
    module: str
    source: str
    filename: str
    transformers: ByClassName | None
    builders: ByClassName | None


class _StepReply(TypedDict):
    """What a step returns from a target: a :class:`TargetResult` but its ``worker``."""

    step: str
    ok: bool
    message: str
    switched_at: float | None
    seconds: float | None
    state: str | None


# -- what a step reports ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TargetResult:
    """How one step went on one target: ``worker`` (its address, or :data:`SCHEDULER`),
    ``step`` (``"prepare"``, ``"apply"``, ``"undo"``, ``"discard"``, ``"publish"``), ``ok`` and
    a one-line ``message``. For an apply or an undo that switched versions, ``switched_at`` is
    the target's wall-clock time (``time.time()``) at the end of the switch, and ``seconds`` how
    long the step took there. For an apply, ``state`` is the update's state there at the end
    (``"applied"``, ``"rolled back"``, ``"partially rolled back"``...), None when it is not
    known (no reply, or not finished in time: it may still apply)."""

    worker: str
    step: str
    ok: bool
    message: str
    switched_at: float | None = None
    seconds: float | None = None
    state: str | None = None

    def __str__(self) -> str:
        return f"{self.worker}: {self.step} {'ok' if self.ok else 'FAILED'}: {self.message}"


@dataclasses.dataclass(frozen=True)
class ClusterReport:
    """The outcome of :func:`update_cluster` or :func:`undo_cluster`: ``ok`` when every
    target ended on the same version, the one asked for; ``results``, every step's
    :class:`TargetResult` in order; ``summary``, one sentence. For an update, ``fleet`` is the
    rollout's :class:`~pymoult.rollout.RolloutReport`: one
    :class:`~pymoult.rollout.ProcessReport` per target (its stage, outcome, and whether it is on
    the ``"new"`` or ``"old"`` version, or ``"split"``), where it halted, and whether the
    cluster is on one version (``fleet.version``: ``"new"``, ``"old"``, ``"split"``, as for a
    rollout over listeners)."""

    module: str
    version: str
    action: str
    ok: bool
    summary: str
    results: tuple[TargetResult, ...]
    seconds: float
    fleet: RolloutReport | None = None

    @property
    def processes(self) -> tuple[ProcessReport, ...]:
        """One :class:`~pymoult.rollout.ProcessReport` per target (an update's; none for an
        undo)."""
        return tuple(self.fleet.processes) if self.fleet is not None else ()

    @property
    def failed(self) -> tuple[TargetResult, ...]:
        """The results of the steps that failed."""
        return tuple(result for result in self.results if not result.ok)

    def switch_times(self, step: str = "apply") -> dict[str, float]:
        """``{target: switched_at}`` for the targets where ``step`` switched the version."""
        return {r.worker: r.switched_at for r in self.results
                if r.step == step and r.ok and r.switched_at is not None}

    @property
    def skew(self) -> float | None:
        """Seconds between the first and the last target's switch (of the applies, else of the
        undos), from the targets' clocks; None with fewer than two switches."""
        times = self.switch_times("apply") or self.switch_times("undo")
        return max(times.values()) - min(times.values()) if len(times) > 1 else None

    def __str__(self) -> str:
        if self.fleet is None:
            return "\n".join([f"{self.action} {self.version}: {self.summary}"] +
                             [f"  {result}" for result in self.results])
        lines = [process.line() for process in self.fleet.processes]
        lines += [f"{result.worker}  {result.step}: FAILED - {result.message}"
                  for result in self.results if result.step == "publish" and not result.ok]
        return "\n".join(lines + [f"{self.action} {self.version}: {self.summary}"])


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (and its cause's,
    for an error that wraps one, as a transformer's)."""
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {str(cause).strip().splitlines()[0]})"
    return _short(text)


def _short(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 3] + "..."


def _steps_text(update: ModuleUpdate) -> str:
    steps = [str(step) for step in update.steps]
    if not steps:
        return "nothing changes"
    shown = "; ".join(steps[:3])
    return shown + (f"; and {len(steps) - 3} more" if len(steps) > 3 else "")


# -- the state of one process (a worker's, the scheduler's) ---------------------------------------

class _Applied:
    __slots__ = ("version", "module", "update", "switched_at")

    def __init__(self, version: str, module: str, update: ModuleUpdate,
                 switched_at: float | None) -> None:
        self.version = version
        self.module = module
        self.update = update
        self.switched_at = switched_at


class _ProcessState:
    """What this process knows of the cluster's updates: the updates prepared and not yet
    applied, the applied ones kept for an undo, and each module's chain of applied versions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: version -> (ModuleUpdate, module name)
        self.prepared: collections.OrderedDict[str, tuple[ModuleUpdate, str]] = \
            collections.OrderedDict()
        self.applied: collections.deque[_Applied] = collections.deque(maxlen=HISTORY)  # oldest
        self.chains: dict[str, list[str]] = {}  # module -> [version, ...] applied here, in order
        self.manager: Manager | None = None
        self.loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = \
            weakref.WeakKeyDictionary()
        self.converged: tuple[_StepReply, ...] = ()  # the last results of the plugin's setup

    def step_lock(self) -> asyncio.Lock:
        """The lock that makes the steps of this process run one at a time (per event loop:
        a worker's steps all run in its loop)."""
        loop = asyncio.get_running_loop()
        with self.lock:
            lock = self.loop_locks.get(loop)
            if lock is None:
                lock = self.loop_locks[loop] = asyncio.Lock()
            return lock

    def chain(self, module: str) -> list[str]:
        return self.chains.setdefault(module, [])

    def record(self, version: str, module: str, update: ModuleUpdate,
               switched_at: float | None) -> None:
        chain = self.chain(module)
        chain.append(version)
        del chain[:-HISTORY]
        self.applied.append(_Applied(version, module, update, switched_at))

    def find(self, version: str) -> _Applied | None:
        return next((entry for entry in self.applied if entry.version == version), None)

    def manager_here(self) -> Manager:
        with self.lock:
            if self.manager is None:
                self.manager = fetch_manager(MANAGER_NAME) or ThreadedManager(MANAGER_NAME).start()
            return self.manager


_STATE = _ProcessState()


def _result(step: str, ok: object, message: object, switched_at: float | None = None,
            seconds: float | None = None, state: str | None = None) -> _StepReply:
    return {"step": step, "ok": bool(ok), "message": _short(message),
            "switched_at": switched_at, "seconds": seconds, "state": state}


def _wall_clock(monotonic_time: float) -> float:
    """The wall-clock time of a ``time.monotonic()`` reading taken a moment ago."""
    return time.time() - (time.monotonic() - monotonic_time)


def _make_update(version: str, module: str, source: str, filename: str, timeout: float,
                 transformers: ByClassName | None,
                 builders: ByClassName | None) -> tuple[ModuleUpdate, bool]:
    """The ModuleUpdate of ``module`` to ``source`` here (evaluated on trial): ``(update,
    imported)``, where ``imported`` says that the module was imported for it."""
    live = sys.modules.get(module)
    imported = False
    if live is None:
        try:
            live = importlib.import_module(module)
        except Exception as exc:
            raise PymoultValueError(f"module {module!r} is not loaded here and cannot be "
                                    f"imported: {_one_line(exc)}") from None
        imported = True
    update = ModuleUpdate(live, source=source, filename=filename, transformers=transformers,
                          builders=builders, name=f"cluster update {version}", timeout=timeout,
                          sleep_time=QUIESCENCE_INTERVAL)
    update.on_timeout = "fail"  # the patience is the step's: no postponement beyond it
    return update, imported


async def _outcome(future: concurrent.futures.Future[Any],
                   timeout: float) -> tuple[bool, BaseException | None]:
    """Wait at most ``timeout`` seconds for the concurrent ``future``: ``(done, exception)``.
    (Not ``asyncio.wait_for``: an update's own ``UpdateTimeoutError`` is a ``TimeoutError``.)"""
    waited = asyncio.wrap_future(future)
    done, _ = await asyncio.wait({waited}, timeout=timeout)
    if not done:
        return False, None
    return True, waited.exception()


async def _run_update(update: ModuleUpdate,
                      timeout: float) -> tuple[bool, str | None, float | None, float | None]:
    """Queue ``update`` on this process's manager and wait for its outcome: ``(ok, message,
    seconds, switched_at)``; ``update.state`` tells the rest, once the outcome is known."""
    started = time.monotonic()
    future = _STATE.manager_here().add_update(update)
    done, exc = await _outcome(future, timeout + STEP_MARGIN)
    if not done:
        return (False, f"not finished within {timeout + STEP_MARGIN:g} s (state: "
                       f"{update.state.value}); see the process's log", None, None)
    if exc is not None:
        state = update.state
        if state is UpdateState.ROLLED_BACK:
            text = f"failed and rolled back, nothing changed: {_one_line(exc)}"
        elif state is UpdateState.PARTIALLY_ROLLED_BACK:
            text = f"failed and only PARTLY rolled back: {_one_line(exc)}"
        else:
            text = f"not applied ({state.value}): {_one_line(exc)}"
        return False, text, time.monotonic() - started, None
    applied = update.times.get("applied")
    switched_at = _wall_clock(applied) if applied is not None else time.time()
    return True, None, time.monotonic() - started, switched_at


# -- the undo of one applied update ----------------------------------------------------------------

class _ModuleRevert(RevertUpdate):
    """The revert of an applied ``ModuleUpdate``: a :class:`RevertUpdate` (through the journal,
    newest update only, the original left *reverted*), with no thread suspended (the undo
    waits), which waits for every code the module's names the update binds hold now: not only
    the functions whose code it swapped, but those it bound anew (a function added, one
    rebound), which a thread may run as well."""

    on_timeout = "fail"

    def installed_codes(self) -> list[types.CodeType]:
        codes = dict.fromkeys(super().installed_codes())
        for plan in getattr(self.update, "plans", ()):
            codes.update(dict.fromkeys(plan.live_codes()))
        return list(codes)


def revert_on_worker(update: Update, timeout: float | None = None) -> UpdateFuture:
    """Undo the applied ``update`` in this process, at a safe point, through its journal (a
    :class:`~pymoult.highlevel.revert.RevertUpdate` that also waits for the functions the
    update bound anew); the returned future carries the outcome (as
    :meth:`Manager.add_update`'s). The one place the Dask steps revert an update."""
    if not isinstance(update, Update) or update.state is not UpdateState.APPLIED:
        raise PymoultValueError(f"only an applied update can be reverted, not {update!r}")
    revert = _ModuleRevert(update, threads=[], timeout=timeout, sleep_time=QUIESCENCE_INTERVAL)
    return _STATE.manager_here().add_update(revert)


# -- the steps, as they run on a target (Client.run, run_on_scheduler) -------------------------

async def _prepare_here(version: str, module: str, source: str, filename: str, timeout: float,
                        transformers: ByClassName | None = None,
                        builders: ByClassName | None = None) -> _StepReply:
    async with _STATE.step_lock():
        if version in _STATE.chain(module):
            return _result("prepare", True, "already applied here")
        if version in _STATE.prepared:
            return _result("prepare", True, "already prepared here")
        started = time.monotonic()
        try:
            update, imported = await asyncio.to_thread(
                _make_update, version, module, source, filename, timeout, transformers, builders)
        except Exception as exc:
            return _result("prepare", False, _one_line(exc))
        with _STATE.lock:
            _STATE.prepared[version] = (update, module)
            while len(_STATE.prepared) > PREPARED_KEPT:
                _STATE.prepared.popitem(last=False)
        note = " (imported first)" if imported else ""
        return _result("prepare", True, f"ready{note}: {_steps_text(update)}",
                       seconds=time.monotonic() - started)


def _task_threads(server: distributed.Worker | None) -> list[threading.Thread]:
    """The threads of ``server`` (a worker) running a task now (none on the scheduler)."""
    running = set(getattr(server, "active_threads", None) or ())
    return [thread for thread in threading.enumerate() if thread.ident in running]


async def _apply_here(version: str, running_tasks: str = "wait",
                      dask_worker: distributed.Worker | None = None,
                      dask_scheduler: distributed.Scheduler | None = None) -> _StepReply:
    async with _STATE.step_lock():
        with _STATE.lock:
            prepared = _STATE.prepared.pop(version, None)
        if prepared is None:
            if any(version in chain for chain in _STATE.chains.values()):
                return _result("apply", True, "already applied here")
            return _result("apply", False, "not prepared here (never, or dropped since): "
                                           "prepare it again")
        update, module = prepared
        if running_tasks == "continue":  # suspend the task threads: no wait for quiescence
            update.threads = _task_threads(dask_worker)
        assert update.timeout is not None  # _make_update gives it the step's timeout
        ok, error, seconds, switched_at = await _run_update(update, update.timeout)
        if not ok:
            logger.warning("%s: %s", update.name, error)
            ended = seconds is not None and update.state.finished
            return _result("apply", False, error, seconds=seconds,
                           state=update.state.value if ended else None)
        assert seconds is not None  # an update that applied says how long it took
        _STATE.record(version, module, update, switched_at)
        warning: str
        for warning in update.warnings:
            logger.warning("%s: %s", update.name, warning)
        return _result("apply", True, f"applied in {seconds * 1e3:.1f} ms: {_steps_text(update)}",
                       switched_at, seconds, UpdateState.APPLIED.value)


async def _undo_locked(version: str, timeout: float) -> _StepReply:
    entry = _STATE.find(version)
    module = entry.module if entry is not None else \
        next((m for m, chain in _STATE.chains.items() if version in chain), None)
    if module is None:
        with _STATE.lock:
            dropped = _STATE.prepared.pop(version, None)
        return _result("undo", True, "was only prepared here: dropped" if dropped else
                       "not applied here: nothing to undo")
    chain = _STATE.chain(module)
    if chain[-1] != version:
        return _result("undo", False, f"{chain[-1]} was applied to {module} after it here: "
                                      "undo that first")
    if entry is None:
        return _result("undo", False, f"its journal is no longer kept here (the last {HISTORY} "
                                      "updates are)")
    started = time.monotonic()
    try:
        future = revert_on_worker(entry.update, timeout)
    except Exception as exc:
        return _result("undo", False, f"not reverted: {_one_line(exc)}")
    done, error = await _outcome(future, timeout + STEP_MARGIN)
    if not done:
        return _result("undo", False, f"not finished within {timeout + STEP_MARGIN:g} s")
    if error is not None:
        logger.warning("revert %s: %s", version, _one_line(error))
        return _result("undo", False, f"not reverted: {_one_line(error)}",
                       seconds=time.monotonic() - started)
    switched_at = _wall_clock(future.result().times.get("applied", time.monotonic()))
    chain.pop()
    with _STATE.lock:
        _STATE.applied.remove(entry)
    seconds = time.monotonic() - started
    return _result("undo", True, f"reverted to the version before it in {seconds * 1e3:.1f} ms",
                   switched_at, seconds)


async def _undo_here(version: str, timeout: float) -> _StepReply:
    async with _STATE.step_lock():
        return await _undo_locked(version, timeout)


def _discard_here(version: str) -> _StepReply:
    with _STATE.lock:
        dropped = _STATE.prepared.pop(version, None)
    return _result("discard", True, "dropped" if dropped else "nothing prepared here")


def _versions_here() -> dict[str, list[str]]:
    return {module: list(chain) for module, chain in _STATE.chains.items() if chain}


def _has_module(module: str) -> bool:
    return module in sys.modules


async def _converge(versions: Iterable[VersionRecord], timeout: float) -> list[_StepReply]:
    """Bring this process to ``versions`` (the published chain of each module, oldest first):
    undo what it applied beyond the common part, newest first, then apply what it lacks."""
    results: list[_StepReply] = []
    published: collections.OrderedDict[str, list[VersionRecord]] = collections.OrderedDict()
    for record in versions:
        published.setdefault(record["module"], []).append(record)
    async with _STATE.step_lock():
        for module in list(published) + [m for m in _STATE.chains if m not in published]:
            wanted = published.get(module, [])
            here = _STATE.chain(module)
            common = 0
            while common < min(len(here), len(wanted)) and \
                    here[common] == wanted[common]["version"]:
                common += 1
            failed = False
            for version in reversed(here[common:]):
                outcome = await _undo_locked(version, timeout)
                results.append(outcome)
                if not outcome["ok"]:
                    failed = True
                    break
            for record in ([] if failed else wanted[common:]):
                try:
                    update, _ = await asyncio.to_thread(
                        _make_update, record["version"], module, record["source"],
                        record["filename"], timeout, record.get("transformers"),
                        record.get("builders"))
                except Exception as exc:
                    results.append(_result("apply", False,
                                           f"{record['version']}: {_one_line(exc)}"))
                    break
                ok, error, seconds, switched_at = await _run_update(update, timeout)
                if not ok:
                    results.append(_result("apply", False, f"{record['version']}: {error}"))
                    break
                _STATE.record(record["version"], module, update, switched_at)
                results.append(_result("apply", True, f"{record['version']}: applied",
                                       switched_at, seconds))
    return results


def _published_here(dask_scheduler: distributed.Scheduler | None = None) -> list[VersionRecord]:
    assert dask_scheduler is not None  # run_on_scheduler passes it
    blob = dask_scheduler.worker_plugins.get(PLUGIN_NAME)
    if blob is None:
        return []
    plugin = dask_pickle.loads(blob) if isinstance(blob, bytes) else blob
    return list(getattr(plugin, "versions", []))


class ModuleVersionsPlugin(WorkerPlugin):
    """The versions published on the cluster: each module's chain of versions (oldest first,
    the last :data:`HISTORY`), as records ``{"version", "module", "source", "filename",
    "transformers", "builders"}``. Its ``setup`` brings the worker to them: on a worker that
    joins, it imports each module and applies its versions in order before the worker runs a
    task; on a worker already there (the plugin is registered again at each publication), it
    does what it lacks, and undoes what was withdrawn. It never fails the worker: a failure is
    logged (logger ``pymoult``) and :func:`cluster_versions` shows where each worker is."""

    idempotent = False
    name = PLUGIN_NAME

    def __init__(self, versions: Iterable[VersionRecord] = (), timeout: float = 30.0) -> None:
        self.versions = list(versions)
        self.timeout = timeout

    async def setup(self, worker: distributed.Worker) -> None:
        try:
            results = await _converge(self.versions, self.timeout)
        except Exception as exc:  # never fail the worker's start: say so, and go on
            results = [_result("apply", False, f"could not converge: {_one_line(exc)}")]
        _STATE.converged = tuple(results)
        for outcome in results:
            level = logging.INFO if outcome["ok"] else logging.ERROR
            logger.log(level, "pymoult plugin on %s: %s %s: %s", worker.address,
                       outcome["step"], "ok" if outcome["ok"] else "FAILED", outcome["message"])


# -- the client's side ---------------------------------------------------------------------------

def _check_client(client: distributed.Client) -> None:
    if not isinstance(client, distributed.Client):
        raise PymoultTypeError(f"expected a distributed.Client, got {client!r}")
    if client.asynchronous:
        raise PymoultTypeError("the Dask client is asynchronous: give a synchronous Client "
                               "(these calls block)")
    if client.status != "running":
        raise PymoultValueError(f"the Dask client is not connected (status {client.status!r}): "
                                "connect it to the cluster's scheduler first")


def _scheduler_address(client: distributed.Client) -> str:
    return getattr(client.scheduler, "address", None) or "the scheduler"


def _worker_addresses(dask_scheduler: distributed.Scheduler | None = None) -> list[str]:
    assert dask_scheduler is not None  # run_on_scheduler passes it
    return sorted(dask_scheduler.workers)


def _workers(client: distributed.Client) -> list[str]:
    try:
        return client.run_on_scheduler(_worker_addresses)
    except (OSError, TimeoutError) as exc:
        raise ListenerError(f"cannot reach the Dask scheduler at {_scheduler_address(client)}: "
                            f"{_one_line(exc)}", address=_scheduler_address(client)) from None


def cluster_workers(client: distributed.Client) -> list[str]:
    """The addresses of the workers the scheduler of ``client`` knows now, sorted. (Read on
    the scheduler: ``Client.scheduler_info()`` may race with the client's periodic refresh,
    which asks for no worker, and answer with none.)"""
    _check_client(client)
    return _workers(client)


def _cluster_targets(client: distributed.Client, module: str,
                     scheduler: bool = True) -> list[str]:
    targets = _workers(client)
    if scheduler:
        try:
            if client.run_on_scheduler(_has_module, module):
                targets.append(SCHEDULER)
        except Exception as exc:  # a scheduler without Pymoult, say
            logger.warning("cannot tell whether the scheduler has %s: %s", module,
                           _one_line(exc))
    return targets


def _check_module_name(module: object) -> None:
    if not isinstance(module, str) or not all(part.isidentifier() for part in module.split(".")):
        raise PymoultTypeError(f"module must be a module's dotted name, got {module!r}")


def _on_targets(client: distributed.Client, step: str, function: Callable[..., object],
               args: Sequence[object], targets: Iterable[str]) -> list[TargetResult]:
    """Run ``function(*args)`` on each target at once; one :class:`TargetResult` per target, in
    the order of ``targets``."""
    targets = list(dict.fromkeys(targets))
    workers = [t for t in targets if t != SCHEDULER]
    outcomes: dict[str, _StepReply] = {}

    def failure(exc: BaseException) -> _StepReply:
        return _result(step, False, f"could not run the step there: {_one_line(exc)}")

    def on_scheduler() -> _StepReply:
        try:
            return client.run_on_scheduler(function, *args)
        except Exception as exc:
            return failure(exc)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        scheduler = pool.submit(on_scheduler) if SCHEDULER in targets else None
        if workers:
            try:
                replies = client.run(function, *args, workers=workers, on_error="return")
            except Exception as exc:
                replies = {worker: exc for worker in workers}
            for worker in workers:
                reply = replies.get(worker, PymoultValueError(
                    "the worker did not answer (it left the cluster?)"))
                outcomes[worker] = failure(reply) if isinstance(reply, BaseException) else reply
        if scheduler is not None:
            outcomes[SCHEDULER] = scheduler.result()
    return [TargetResult(worker=target, **outcomes[target]) for target in targets]


def published_versions(client: distributed.Client) -> list[VersionRecord]:
    """The versions published on the cluster of ``client`` (the plugin's records, oldest
    first), as a list of dicts; empty when nothing was published."""
    _check_client(client)
    return client.run_on_scheduler(_published_here)


def cluster_versions(client: distributed.Client) -> dict[str, dict[str, list[str]] | str]:
    """``{target: {module: [version, ...]}}``: the versions each worker (and the scheduler) has
    applied, in order; a target that could not answer maps to its error's text."""
    _check_client(client)
    targets = _workers(client) + [SCHEDULER]
    found: dict[str, dict[str, list[str]] | BaseException] = {}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        scheduler = pool.submit(client.run_on_scheduler, _versions_here)
        try:
            found.update(client.run(_versions_here, on_error="return"))
        except Exception as exc:
            found.update({worker: exc for worker in targets if worker != SCHEDULER})
        try:
            found[SCHEDULER] = scheduler.result()
        except Exception as exc:
            found[SCHEDULER] = exc
    return {target: (_one_line(value) if isinstance(value, BaseException) else value)
            for target, value in found.items()}


class ClusterUpdate:
    """One new version of ``module`` for the cluster of ``client`` (a synchronous
    ``distributed.Client``), given as ``source`` (text) or ``path`` (a file, read here).

    Made here, it checks the client and that the new version compiles (else
    :class:`~pymoult.errors.ModuleUpdateError`, one sentence); nothing is sent yet. Its steps
    each run on the targets given (worker addresses, and :data:`SCHEDULER`; default: every
    worker, and the scheduler if it has imported the module), all at once, and return one
    :class:`TargetResult` per target:

    - :meth:`prepare`: the ``ModuleUpdate`` is made there (compiled, evaluated on trial; the
      module imported first if the process has not imported it) and kept;
    - :meth:`apply`: the prepared update is applied there at a safe point, within ``timeout``
      seconds of waiting for one (else it fails there, nothing changed there);
    - :meth:`undo`: the applied update is reverted there (a target where it was not applied
      says so and is ok);
    - :meth:`discard`: a prepared update is dropped there;
    - :meth:`publish`: the version is added to the plugin's records, so that workers that join
      later get it (and every worker is brought to the published versions);
      :meth:`withdraw` takes it out again; :meth:`converge` registers them again unchanged.

    ``version`` names it (``module@digest-nonce``). ``transformers`` and ``builders`` are
    those of ``ModuleUpdate`` (by class name), sent to the targets with cloudpickle.

    ``running_tasks`` says when a process switches. ``"wait"`` (the default): once no thread
    of it runs a function the update changes (checked again inside the switch), so a task
    running one finishes on the old version; a task that runs such a function for longer than
    ``timeout`` makes the apply fail there. ``"continue"``: the threads running a task are
    suspended wherever they are (milliseconds) and the process switches: a call already running
    finishes on its old code, what it calls afterwards is the new version, except that the
    switch still waits while a running frame names two changed functions (it could see both
    versions). The undo and a joining worker always wait.
    """

    def __init__(self, client: distributed.Client, module: str, source: str | None = None,
                 path: str | os.PathLike[str] | None = None, *, filename: str | None = None,
                 timeout: float = 30.0, scheduler: bool = True,
                 transformers: ByClassName | None = None, builders: ByClassName | None = None,
                 running_tasks: str = "wait") -> None:
        _check_client(client)
        _check_module_name(module)
        if (source is None) == (path is None):
            raise PymoultTypeError("give the new version as source= or path= (one of them)")
        if path is not None:
            try:
                with open(path, "rb") as stream:
                    source = importlib.util.decode_source(stream.read())
            except (OSError, SyntaxError, UnicodeDecodeError) as exc:
                raise ModuleUpdateError(f"cannot read the new version of {module!r} from "
                                        f"{path}: {_one_line(exc)}", module=module) from None
        if not isinstance(source, str):
            raise PymoultTypeError(f"source must be a str, got {type(source).__name__}")
        if running_tasks not in RUNNING_TASKS:
            raise PymoultValueError(f"running_tasks must be one of {', '.join(RUNNING_TASKS)}, "
                                    f"got {running_tasks!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise PymoultValueError(f"timeout must be a positive number of seconds, got "
                                    f"{timeout!r}")
        self.filename = filename or (str(path) if path is not None else f"<new {module}>")
        try:
            compile(source, self.filename, "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise ModuleUpdateError(f"the new version of {module!r} does not compile: "
                                    f"{exc.msg} ({self.filename}, line {exc.lineno})",
                                    module=module, lineno=exc.lineno) from None
        except ValueError as exc:  # a NUL byte
            raise ModuleUpdateError(f"the new version of {module!r} does not compile: {exc}",
                                    module=module) from None
        self.client = client
        self.module = module
        self.source = source
        self.timeout = float(timeout)
        self.scheduler = scheduler
        self.transformers = transformers
        self.builders = builders
        self.running_tasks = running_tasks
        digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        self.version = f"{module}@{digest[:10]}-{uuid.uuid4().hex[:6]}"

    def __repr__(self) -> str:
        return f"<ClusterUpdate {self.version}>"

    # -- the targets -------------------------------------------------------------------------

    def targets(self) -> list[str]:
        """Every worker of the cluster now, and :data:`SCHEDULER` if the update includes the
        scheduler and its process has imported the module."""
        return _cluster_targets(self.client, self.module, self.scheduler)

    def _targets(self, targets: Iterable[str] | None) -> list[str]:
        return self.targets() if targets is None else list(targets)

    # -- the steps ---------------------------------------------------------------------------

    def prepare(self, targets: Iterable[str] | None = None) -> list[TargetResult]:
        """Make the update on each target (trial there, nothing changed)."""
        return _on_targets(self.client, "prepare", _prepare_here,
                           (self.version, self.module, self.source, self.filename, self.timeout,
                            self.transformers, self.builders), self._targets(targets))

    def apply(self, targets: Iterable[str] | None = None) -> list[TargetResult]:
        """Apply the prepared update on each target, at a safe point there."""
        return _on_targets(self.client, "apply", _apply_here,
                           (self.version, self.running_tasks), self._targets(targets))

    def undo(self, targets: Iterable[str] | None = None) -> list[TargetResult]:
        """Revert the update on each target where it was applied (a safe point there too)."""
        return _on_targets(self.client, "undo", _undo_here, (self.version, self.timeout),
                           self._targets(targets))

    def discard(self, targets: Iterable[str] | None = None) -> list[TargetResult]:
        """Drop the prepared update on each target."""
        return _on_targets(self.client, "discard", _discard_here, (self.version,),
                           self._targets(targets))

    def record(self) -> VersionRecord:
        """This version as the plugin keeps it."""
        return {"version": self.version, "module": self.module, "source": self.source,
                "filename": self.filename, "transformers": self.transformers,
                "builders": self.builders}

    def publish(self) -> list[TargetResult]:
        """Add this version to the published ones: workers that join from now on get it, and
        every worker is brought to the published versions (the plugin's setup runs on each).
        One result per worker: whether it is on them afterwards."""
        versions = [r for r in published_versions(self.client) if r["version"] != self.version]
        versions.append(self.record())
        return _publish(self.client, versions, self.timeout)

    def withdraw(self) -> list[TargetResult]:
        """Take this version out of the published ones (after an undo): the plugin no longer
        gives it to new workers, and brings back any worker that still has it."""
        versions = [r for r in published_versions(self.client) if r["version"] != self.version]
        return _publish(self.client, versions, self.timeout)

    def converge(self) -> list[TargetResult]:
        """Register the published versions again, unchanged: every worker undoes what it
        applied that is not published (an apply whose reply was lost) and applies what it
        lacks. One result per worker."""
        return _publish(self.client, published_versions(self.client), self.timeout)

    # -- the whole update ------------------------------------------------------------------------

    def run(self, undo_on_failure: bool = True, *, canary: int = 0, wave: int | None = None,
            on_stage: StageCallback | None = None) -> ClusterReport:
        """The whole update, as a rollout over the targets (the workers, in the order of their
        addresses, then the scheduler). First every target *prepares*; if one fails, the new
        version is dropped everywhere: nothing changed. Then the applies, by stage: the
        ``canary`` first targets alone (none when 0), then waves of ``wave`` targets at once
        (None: all the others in one wave). At the first target where the apply fails, it
        halts: the later stages are not tried, and the targets that switched are undone, newest
        stage first (unless ``undo_on_failure`` is false), then the published versions are
        registered again, which brings back any worker whose reply was lost. If every target
        applied, the version is published. ``on_stage(stage, reports)`` is called after each
        stage with its targets' :class:`~pymoult.rollout.ProcessReport`. A
        :class:`ClusterReport`, whose ``fleet`` says whether the cluster is on one version."""
        if isinstance(canary, bool) or not isinstance(canary, int) or canary < 0:
            raise PymoultValueError(f"canary must be an int, at least 0, got {canary!r}")
        if wave is not None and (isinstance(wave, bool) or not isinstance(wave, int)
                                 or wave < 1):
            raise PymoultValueError(f"wave must be an int, at least 1 (or None: all at once), "
                                    f"got {wave!r}")
        started = time.monotonic()
        targets = self.targets()
        if not targets:
            raise PymoultValueError("the Dask cluster has no worker to update")
        results = self.prepare(targets)
        missing = [r for r in results if not r.ok and "cannot be imported" in r.message]
        if len(missing) == len(targets):
            self.discard(targets)
            raise PymoultValueError(f"no process of the cluster has module {self.module!r}: "
                                    f"{missing[0].message}")
        reports = [ProcessReport(target, "prepare") for target in targets]
        by_target = {report.address: report for report in reports}
        failed = [r for r in results if not r.ok]
        if failed:
            results += self.discard(targets)
            for result in results[:len(targets)]:
                report = by_target[result.worker]
                report.outcome = "failed" if not result.ok else "not tried"
                report.detail = result.message if not result.ok else \
                    "ready, then dropped: the new version failed elsewhere"
            if on_stage is not None:
                on_stage("prepare", reports)
            fleet = fleet_report(reports, failed[0].worker)
            return _report(self, False, f"not applied: the new version failed on {len(failed)} "
                                       f"of {len(targets)} targets before any switched; "
                                       f"nothing changed; {fleet.summary}", results, started,
                           fleet=fleet)
        for report in reports:
            report.stage, report.detail = "not tried", "ready, then dropped"

        def push(group: list[ProcessReport]) -> None:
            applied = self.apply([report.address for report in group])
            results.extend(applied)
            for result in applied:
                _read_apply(by_target[result.worker], result, self.version)

        def roll_back(group: list[ProcessReport]) -> None:
            undone = self.undo([report.address for report in group])
            results.extend(undone)
            for result in undone:
                _read_undo(by_target[result.worker], result)

        stages = plan_stages(targets, canary, wave or max(1, len(targets) - canary))
        halted_at = run_stages(reports, stages, push, roll_back if undo_on_failure else None,
                               on_stage)
        if halted_at is None:
            published = _publish_results(self)
            results += published
            for result in published:
                if not result.ok:  # a worker not on the published versions: two versions
                    off = by_target.get(result.worker)
                    if off is None:  # one that joined during the rollout
                        off = by_target[result.worker] = ProcessReport(result.worker, "joined")
                        reports.append(off)
                        off.outcome = "unknown"
                    off.version = SPLIT
                    off.detail += f"; publish: {result.message}"
            skew = _one_stage_skew(results) if len(stages) == 1 else None
            fleet = fleet_report(reports, None, skew)
            return _report(self, fleet.version == NEW, fleet.summary, results, started,
                           fleet=fleet)
        self.discard([r.address for r in reports if r.outcome != "applied"])
        if undo_on_failure:
            try:  # a worker whose reply was lost may have switched: the plugin brings it back
                converged = self.converge()
            except Exception as exc:
                converged = [TargetResult(SCHEDULER, "publish", False, _one_line(exc))]
            results += converged
            self._settle_unknown(reports)
        fleet = fleet_report(reports, halted_at)
        return _report(self, False, fleet.summary, results, started, fleet=fleet)

    def _settle_unknown(self, reports: list[ProcessReport]) -> None:
        """Ask the targets whose apply has no known outcome which versions they are on now."""
        unknown = [r for r in reports if r.outcome == "unknown"]
        if not unknown:
            return
        try:
            found = cluster_versions(self.client)
        except Exception as exc:
            logger.warning("cannot ask the cluster where its workers are: %s", _one_line(exc))
            return
        for report in unknown:
            there = found.get(report.address)
            if isinstance(there, dict):
                on = self.version in there.get(self.module, [])
                report.version = NEW if on else OLD
                report.detail += f"; asked afterwards: on the {report.version} version"


def _one_stage_skew(results: Sequence[TargetResult]) -> float | None:
    """Seconds between the first and the last switch of the applies of one stage (every
    target in one wave), when each reported its switch; else None."""
    times = [r.switched_at for r in results
             if r.step == "apply" and r.ok and r.switched_at is not None]
    applies = [r for r in results if r.step == "apply"]
    return max(times) - min(times) if 1 < len(times) == len(applies) else None


def _read_apply(report: ProcessReport, result: TargetResult, version: str) -> None:
    """Fill a target's rollout report in from its apply ``result``."""
    report.detail = result.message
    if result.ok:
        report.outcome, report.version, report.applied = "applied", NEW, [version]
        report.applied_at = result.switched_at
    elif result.state is None:  # no reply, or not finished in time: it may still switch
        report.outcome, report.version = "unknown", SPLIT
    else:
        report.outcome = "failed"
        report.version = SPLIT if result.state == UpdateState.PARTIALLY_ROLLED_BACK.value \
            else OLD


def _read_undo(report: ProcessReport, result: TargetResult) -> None:
    """Fill a target's rollout report in from the ``result`` of its undo."""
    if result.ok:
        report.outcome, report.version, report.applied = "rolled back", OLD, []
        report.detail += f"; undone: {result.message}"
    else:
        report.outcome, report.version = "rollback failed", SPLIT
        report.detail += f"; undo FAILED: {result.message}"


def _report(update: ClusterUpdate, ok: bool, summary: str, results: Sequence[TargetResult],
            started: float, action: str = "update",
            fleet: RolloutReport | None = None) -> ClusterReport:
    report = ClusterReport(update.module, update.version, action, ok, summary, tuple(results),
                           time.monotonic() - started, fleet)
    logger.log(logging.INFO if ok else logging.WARNING, "%s %s: %s", action, update.version,
               summary)
    for result in results:
        if not result.ok:
            logger.warning("  %s", result)
    return report


def _publish_results(update: ClusterUpdate) -> list[TargetResult]:
    try:
        return update.publish()
    except Exception as exc:
        return [TargetResult(SCHEDULER, "publish", False, _one_line(exc))]


def _publish(client: distributed.Client, versions: Sequence[VersionRecord],
             timeout: float) -> list[TargetResult]:
    kept: list[VersionRecord] = []
    for record in reversed(versions):  # the last HISTORY versions of each module
        if sum(r["module"] == record["module"] for r in kept) < HISTORY:
            kept.append(record)
    kept.reverse()
    client.register_plugin(ModuleVersionsPlugin(kept, timeout), name=PLUGIN_NAME)
    wanted: dict[str, list[str]] = {}
    for record in kept:
        wanted.setdefault(record["module"], []).append(record["version"])
    results: list[TargetResult] = []
    for worker, versions_there in cluster_versions(client).items():
        if worker == SCHEDULER:
            continue
        if isinstance(versions_there, str):
            results.append(TargetResult(worker, "publish", False, versions_there))
            continue
        off = [m for m in set(wanted) | set(versions_there)
               if versions_there.get(m, []) != wanted.get(m, [])]
        results.append(TargetResult(
            worker, "publish", not off,
            "on the published versions" if not off else
            "not on the published versions of " + ", ".join(sorted(off)) +
            " (see the worker's log)"))
    return results


def update_cluster(client: distributed.Client, module: str, source: str | None = None,
                   path: str | os.PathLike[str] | None = None, *, filename: str | None = None,
                   timeout: float = 30.0, scheduler: bool = True,
                   transformers: ByClassName | None = None, builders: ByClassName | None = None,
                   running_tasks: str = "wait", undo_on_failure: bool = True, canary: int = 0,
                   wave: int | None = None,
                   on_stage: StageCallback | None = None) -> ClusterReport:
    """Update ``module`` to a new version (``source`` text or ``path``) on every worker of the
    cluster of ``client`` (and on the scheduler, if it has imported the module), live, at a
    safe point on each; then publish it, so that workers joining later get it. Returns a
    :class:`ClusterReport` (``ok``, one line per target, the fleet's version, the switch skew).

    By default every target switches in one wave; ``canary=N`` switches the first N workers
    alone first, ``wave=N`` the others N at a time, halting at the first failure and undoing
    the targets that switched (see :meth:`ClusterUpdate.run`).

    Bad input raises, one sentence, before anything is sent: ``ModuleUpdateError`` (the new
    version does not compile, or the file cannot be read), ``PymoultTypeError`` /
    ``PymoultValueError`` (not a connected synchronous client, no worker, a bad argument; the
    module missing on every process, after asking them), ``ListenerError`` (the scheduler
    cannot be reached). A failure on some targets is in the report: before any switched
    (prepare), nothing changed; after (apply), the targets that had switched are undone unless
    ``undo_on_failure`` is false. ``running_tasks`` (``"wait"``, ``"continue"``) and the steps
    one by one: see :class:`ClusterUpdate`."""
    update = ClusterUpdate(client, module, source, path, filename=filename, timeout=timeout,
                           scheduler=scheduler, transformers=transformers, builders=builders,
                           running_tasks=running_tasks)
    return update.run(undo_on_failure=undo_on_failure, canary=canary, wave=wave,
                      on_stage=on_stage)


def undo_cluster(client: distributed.Client, module: str, version: str | None = None, *,
                 timeout: float = 30.0) -> ClusterReport:
    """Revert the last published version of ``module`` (or ``version``, which must be the last
    applied on each process) on every worker and on the scheduler, then withdraw it, so that
    workers joining later no longer get it. A :class:`ClusterReport`."""
    _check_client(client)
    _check_module_name(module)
    started = time.monotonic()
    published = [r for r in published_versions(client) if r["module"] == module]
    if version is None:
        if not published:
            raise PymoultValueError(f"no version of {module!r} is published on this cluster: "
                                    "nothing to undo")
        version = published[-1]["version"]
    update = ClusterUpdate.__new__(ClusterUpdate)
    update.client, update.module, update.version = client, module, version
    update.timeout, update.scheduler = float(timeout), True
    targets = update.targets()
    results = update.undo(targets)
    withdrawn = update.withdraw()
    failed = [r for r in results if not r.ok]
    late = [r for r in withdrawn if not r.ok]
    if not failed and not late:
        summary = f"reverted on all {len(targets)} targets, and withdrawn"
    else:
        left = f", and {len(late)} workers are not on the versions left" if late else ""
        summary = (f"the undo failed on {len(failed)} of {len(targets)} targets{left}: the "
                   "cluster may run two versions")
    return _report(update, not failed and not late, summary, results + withdrawn, started,
                   action="undo")
