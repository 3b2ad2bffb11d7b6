"""Updating several running applications at once: a canary, then waves, halted and rolled back
at the first failure.

:func:`rollout` pushes one update script to the listeners at ``addresses`` (each waits for the
updates the script queued): first to the ``canary`` first processes, then to the others in
waves of ``wave`` processes pushed at the same time. At the first process where the push does
not end with every update applied, it halts: the processes of later waves are not tried, and
every process where an update was applied (in earlier waves, or in the failing wave, even the
failing process itself when some of its updates were applied) is sent a ``rollback`` request
naming them, newest wave first, which reverts them at a safe point through their journals
(``pymoult.highlevel.revert``). The :class:`RolloutReport` says, per process, what happened,
and whether the fleet ends on one version: the new one (every process updated), the old one
(nothing stayed applied anywhere) or neither (a rollback failed, or a process did not answer
in time and its update may still apply: ``split``).

With ``two_phase``, every process is first *prepared* (its updates set up, alterable, their
threads held: ``pymoult.delivery.two_phase``), then, once all are, all are committed at once, so
that they switch within one short window; the report's ``skew`` is the time between the first
and the last switch (wall clocks: meaningful across machines only as far as their clocks
agree). If one process fails to prepare, the prepared ones are aborted (nothing changed
anywhere); if one fails at commit, the committed ones are rolled back as above. A prepared
process holds its threads until the decision, at most ``hold`` seconds, after which it aborts
by itself: a coordinator that dies, or a partition between prepare and commit, leaves each
process either committed or, within ``hold``, rolled back, never held for longer; a process
that committed while another expired is split from it, and the report says so.

It needs only the client (``pymoult.client``); each process's listener does the work.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import client
from .errors import ListenerError, PymoultError, PymoultTypeError, PymoultValueError

if TYPE_CHECKING:
    from .protocol import Address, Message

__all__ = ["ProcessReport", "RolloutReport", "rollout", "plan_stages", "run_stages",
           "fleet_report", "NEW", "OLD", "SPLIT"]

#: Where the fleet ends: every process on the new version, every one on the old, or neither.
NEW, OLD, SPLIT = "new", "old", "split"

#: Update states after which nothing of the update stays applied.
_CLEAN = {"rolled back", "aborted", "cancelled", "failed"}


@dataclasses.dataclass
class ProcessReport:
    """What the rollout did to one process. ``stage`` is ``"canary"``, ``"wave N"`` or
    ``"not tried"``; ``outcome`` one of ``applied``, ``failed`` (nothing applied there),
    ``unreachable`` (nothing sent), ``unknown`` (no reply in time: the update may still
    apply), ``rolled back``, ``rollback failed``, ``not tried``; ``version`` is ``new``,
    ``old`` or ``split`` (partly updated, or unknown) for this process; ``detail`` a line of
    text; ``applied`` the names of the updates applied there (until rolled back)."""

    address: str
    stage: str
    outcome: str = "not tried"
    version: str = OLD
    detail: str = ""
    applied: list[str] = dataclasses.field(default_factory=list)
    #: Two-phase: the prepared transaction's id; two-phase and a Dask rollout: when the process
    #: switched (wall clock).
    transaction: str | None = None
    applied_at: float | None = None

    def line(self) -> str:
        """The report's line for this process."""
        text = f"{self.address}  {self.stage}: {self.outcome}"
        return f"{text} - {self.detail}" if self.detail else text


@dataclasses.dataclass
class RolloutReport:
    """The outcome of a :func:`rollout`: ``processes`` (:class:`ProcessReport`, in the order
    given), ``version`` (``NEW``, ``OLD`` or ``SPLIT``), ``halted_at`` (the address where it
    halted, or None) and a one-line ``summary``."""

    processes: list[ProcessReport]
    version: str
    halted_at: str | None
    summary: str
    #: Two-phase, every process updated: seconds between the first and the last switch.
    skew: float | None = None

    @property
    def ok(self) -> bool:
        """True when every process runs the new version."""
        return self.version == NEW

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return dataclasses.asdict(self)


#: ``on_stage(stage, reports)``: called after each stage with the reports of its processes.
StageCallback = Callable[[str, list[ProcessReport]], object]
#: A stage's step (a push, a rollback): ``step(reports)`` acts on a group of processes at once
#: and fills their reports in.
GroupStep = Callable[[list[ProcessReport]], object]


def _describe_failure(reply: Message) -> str:
    error = reply.get("script_error")
    if error is not None:
        return f"script raised {error['type']}: {error['message']}"
    problems = [f"{u['name']!r} {u['state']}" + (f" ({u['error']})" if u.get("error") else "")
                for u in reply.get("updates", [])
                if u.get("state") != "applied" or u.get("error")]
    return "; ".join(problems) or "the script queued no update"


def _push_one(report: ProcessReport, script: str, token: str | None, timeout: float | None,
              hold: float | None = None) -> None:
    """Push to one process and fill its report in (``hold``: a two-phase push, prepared)."""
    try:
        reply = client.push(report.address, script, wait=True, timeout=timeout, token=token,
                            two_phase=hold is not None, hold=hold)
    except ListenerError as exc:
        if exc.may_have_run:
            report.outcome, report.version = "unknown", SPLIT
            report.detail = f"{exc}; the script may have run there, and its updates may apply"
        else:
            report.outcome, report.detail = "unreachable", str(exc)
        return
    except PymoultError as exc:  # refused (authentication, protocol): nothing ran
        report.outcome, report.detail = "failed", f"{type(exc).__name__}: {exc}"
        return
    _read_outcome(report, reply)
    if hold is not None and reply.get("ok"):
        report.outcome, report.version = "prepared", OLD
        report.transaction = reply["transaction"]
        report.detail = ", ".join(u["name"] for u in reply.get("updates", []))


def _read_outcome(report: ProcessReport, reply: Message) -> None:
    """Fill ``report`` in from a push or commit ``reply``."""
    updates = reply.get("updates", [])
    report.applied = [u["name"] for u in updates if u.get("state") == "applied"]
    if reply.get("ok"):
        report.outcome, report.version = "applied", NEW
        report.detail = ", ".join(report.applied) or "nothing to apply"
        return
    report.outcome, report.detail = "failed", _describe_failure(reply)
    unclean = [u for u in updates if u.get("state") not in _CLEAN | {"applied"}]
    if unclean or report.applied:
        report.version = SPLIT  # partly updated, or updates not ended: until rolled back


def _decide_one(report: ProcessReport, op: str, token: str | None,
                timeout: float | None) -> None:
    """Commit or abort the transaction ``report`` prepared, and fill its report in."""
    decide = client.commit if op == "commit" else client.abort
    assert report.transaction is not None  # a prepared report's (_push_one)
    try:
        reply = decide(report.address, report.transaction, timeout=timeout, token=token)
    except PymoultError as exc:
        if op == "commit":
            report.outcome, report.version = "unknown", SPLIT
            report.detail = (f"{exc}; the commit may have reached it (else its updates roll "
                             "back by themselves once the hold is over)")
        else:
            report.outcome = "abort failed"
            report.detail = f"{exc}; its updates roll back by themselves once the hold is over"
        return
    if op == "abort":
        clean = all(u.get("state") in _CLEAN for u in reply.get("updates", []))
        report.outcome, report.version = ("aborted", OLD) if clean else ("abort failed", SPLIT)
        report.detail = "; ".join(f"{u['name']!r} {u['state']}" for u in reply["updates"])
        return
    _read_outcome(report, reply)
    if reply.get("decision") == "expired":
        report.detail = f"not committed within the hold: rolled back ({report.detail})"
    times = [u["applied_at"] for u in reply.get("updates", []) if u.get("applied_at")]
    report.applied_at = max(times) if times else None


def _roll_back_one(report: ProcessReport, token: str | None, timeout: float | None) -> None:
    names = list(reversed(report.applied))
    try:
        reply = client.rollback(report.address, names, timeout=timeout, token=token)
    except PymoultError as exc:
        report.outcome = "rollback failed"
        report.detail += f"; rollback of {', '.join(map(repr, names))} failed: {exc}"
        return
    if reply.get("ok"):
        report.outcome, report.version, report.applied = "rolled back", OLD, []
        report.detail += f"; rolled back ({', '.join(u['name'] for u in reply['updates'])})"
        return
    report.outcome = "rollback failed"
    report.applied = list(reply.get("not_reverted") or names)
    report.detail += "; rollback: " + "; ".join(
        f"{u['name']!r} {u['state']}" + (f" ({u['error']})" if u.get("error") else "")
        for u in reply.get("updates", [])) + f"; still applied: {', '.join(report.applied)}"


def _in_parallel(function: Callable[..., object], reports: Iterable[ProcessReport],
                 *args: object) -> None:
    threads = [threading.Thread(target=function, args=(report, *args), daemon=True,
                                name=f"pymoult rollout {report.address}") for report in reports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _check_count(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PymoultTypeError(f"{what} must be an int, got {value!r}")
    if value < minimum:
        raise PymoultValueError(f"{what} must be at least {minimum}, got {value}")
    return value


def rollout(addresses: Iterable[str | Address | None], script: str, *, token: str | None = None,
            canary: int = 1, wave: int = 1, timeout: float | None = None,
            on_stage: StageCallback | None = None, two_phase: bool = False,
            hold: float | None = None) -> RolloutReport:
    """Push ``script`` to the listeners at ``addresses``: ``canary`` processes first (0: none),
    then waves of ``wave``; halt and roll back at the first failure (see the module notes).
    ``timeout`` bounds each push and each rollback (None: no limit); ``on_stage(stage,
    reports)`` is called after each stage with its processes' reports. ``two_phase``: prepare
    every process, then commit all (``canary`` and ``wave`` do not apply), each prepared
    process holding for at most ``hold`` s (default ``protocol.DEFAULT_HOLD``). Returns a
    :class:`RolloutReport`."""
    targets = [str(client.resolve_address(address)) for address in addresses]
    if not targets:
        raise PymoultValueError("a rollout needs at least one address")
    repeated = sorted({a for a in targets if targets.count(a) > 1})
    if repeated:
        raise PymoultValueError(f"an address is given twice: {', '.join(repeated)}")
    pipes = [a for a in targets if a.startswith("pipe:")]
    if pipes:
        raise PymoultValueError(f"a rollout needs each process's reply, and a named pipe "
                                f"carries none: {', '.join(pipes)}")
    _check_count(canary, "canary", 0)
    _check_count(wave, "wave", 1)
    if not isinstance(script, str):
        raise PymoultTypeError(f"script must be the update script's source text, got "
                               f"{type(script).__name__}")
    if hold is not None and not two_phase:
        raise PymoultValueError("hold applies to a two-phase rollout only")
    if two_phase:
        from .protocol import MAX_HOLD

        if hold is not None and (isinstance(hold, bool) or not isinstance(hold, (int, float))
                                 or not 0 < hold <= MAX_HOLD):
            raise PymoultValueError(f"hold must be a number of seconds above 0 and at most "
                                    f"{MAX_HOLD:g}, got {hold!r}")
        return _two_phase(targets, script, token, timeout, on_stage, hold)
    reports = [ProcessReport(address, "not tried") for address in targets]

    def push(group: list[ProcessReport]) -> None:
        _in_parallel(_push_one, group, script, token, timeout)

    def roll_back(group: list[ProcessReport]) -> None:
        _in_parallel(_roll_back_one, group, token, timeout)

    halted_at = run_stages(reports, plan_stages(targets, canary, wave), push, roll_back,
                           on_stage)
    return fleet_report(reports, halted_at)


def plan_stages(members: Iterable[str], canary: int,
                wave: int) -> list[tuple[str, list[str]]]:
    """The stages of a rollout over ``members`` (in order): ``[(stage, [member, ...]), ...]``,
    the ``canary`` first members as ``"canary"`` (none when 0), then waves of ``wave`` as
    ``"wave 1"``, ``"wave 2"``..."""
    ordered = list(members)
    stages = [("canary", ordered[:canary])] if canary else []
    rest = ordered[canary:]
    stages += [(f"wave {n}", rest[i:i + wave])
               for n, i in enumerate(range(0, len(rest), wave), 1)]
    return stages


def run_stages(reports: Iterable[ProcessReport], stages: Iterable[tuple[str, Sequence[str]]],
               push: GroupStep, roll_back: GroupStep | None = None,
               on_stage: StageCallback | None = None) -> str | None:
    """Run ``stages`` (:func:`plan_stages`) over ``reports`` (:class:`ProcessReport`, one per
    member, by ``address``): for each stage, ``push(group)`` updates its members at once and
    fills their reports in; ``on_stage(stage, group)`` is called after it. At the first report
    whose outcome is not ``"applied"`` it halts: later stages are not tried, and
    ``roll_back(group)`` is called with the members of each stage run whose report lists
    ``applied`` updates, newest stage first (none when ``roll_back`` is None); it fills their
    reports in. Returns the address where it halted, or None. The engine of :func:`rollout`,
    shared with the Dask rollout (``pymoult.delivery.dask_cluster``)."""
    by_address = {report.address: report for report in reports}
    done: list[list[ProcessReport]] = []
    halted_at: str | None = None
    for stage, members in stages:
        group = [by_address[address] for address in members]
        for report in group:
            report.stage = stage
        push(group)
        done.append(group)
        if on_stage is not None:
            on_stage(stage, group)
        failed = [r for r in group if r.outcome != "applied"]
        if failed:
            halted_at = failed[0].address
            break
    if halted_at is not None and roll_back is not None:
        for group in reversed(done):
            targets = [r for r in group if r.applied]
            if targets:
                roll_back(targets)
    return halted_at


def _two_phase(addresses: list[str], script: str, token: str | None, timeout: float | None,
               on_stage: StageCallback | None, hold: float | None) -> RolloutReport:
    from .protocol import DEFAULT_HOLD

    reports = [ProcessReport(address, "prepare") for address in addresses]
    _in_parallel(_push_one, reports, script, token, timeout,
                 DEFAULT_HOLD if hold is None else hold)
    if on_stage is not None:
        on_stage("prepare", reports)
    unprepared = [r for r in reports if r.outcome != "prepared"]
    if unprepared:
        prepared = [r for r in reports if r.outcome == "prepared"]
        _in_parallel(_decide_one, prepared, "abort", token, timeout)
        if on_stage is not None:
            on_stage("abort", prepared)
        return fleet_report(reports, unprepared[0].address)
    for report in reports:
        report.stage = "commit"
    _in_parallel(_decide_one, reports, "commit", token, timeout)
    if on_stage is not None:
        on_stage("commit", reports)
    failed = [r for r in reports if r.outcome != "applied"]
    if failed:
        _in_parallel(_roll_back_one, [r for r in reports if r.applied], token, timeout)
        return fleet_report(reports, failed[0].address)
    switched = [r.applied_at for r in reports if r.applied_at is not None]
    skew = max(switched) - min(switched) if len(switched) == len(reports) else None
    return fleet_report(reports, None, skew)


def fleet_report(processes: list[ProcessReport], halted_at: str | None,
                 skew: float | None = None) -> RolloutReport:
    """The :class:`RolloutReport` of ``processes`` (their reports, filled in), halted at
    ``halted_at`` (or None), with the two-phase ``skew`` (or None): the fleet's version is the
    one every process is on (``NEW``, ``OLD``), else ``SPLIT``, and its summary says so."""
    versions = {r.version for r in processes}
    version = versions.pop() if len(versions) == 1 else SPLIT
    return RolloutReport(processes, version, halted_at,
                         _summary(processes, version, halted_at, skew), skew)


def _summary(processes: list[ProcessReport], version: str, halted_at: str | None,
             skew: float | None = None) -> str:
    count = len(processes)
    if version == NEW:
        if skew is not None:
            return (f"all {count} processes updated, switched within {skew * 1e3:.1f} ms of "
                    "each other")
        return f"all {count} processes updated"
    rolled = sum(r.outcome in ("rolled back", "aborted") for r in processes)
    parts = [f"halted at {halted_at}"] if halted_at is not None else []
    if rolled:
        parts.append(f"{rolled} process{'es' if rolled > 1 else ''} rolled back")
    if version == OLD:
        return "; ".join(parts + [f"the fleet stays on the old version ({count} processes)"])
    if halted_at is None:  # every process applied, yet one is not on the new version
        split = [r.address for r in processes if r.version != NEW]
        return "; ".join(parts + [f"the fleet is NOT on one version: {', '.join(split)} "
                                  f"{'is' if len(split) == 1 else 'are'} not on the new one "
                                  "(see above)"])
    split = [r.address for r in processes if r.version != OLD]
    return "; ".join(parts + [f"the fleet is NOT on one version: {', '.join(split)} "
                              f"{'is' if len(split) == 1 else 'are'} not on the old one "
                              "(see above)"])
