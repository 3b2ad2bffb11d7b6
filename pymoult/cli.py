"""The ``pymoult`` command (also ``python -m pymoult``).

    pymoult run [--listen ADDRESS] [--token-file F] [--address-file F] [-v|--log-level L]
                [--log-file F] app.py [args...]
    pymoult run [...] -m module [args...]
    pymoult run --watch [DIR ...] [...] app.py [args...]
    pymoult push SCRIPT | --module NAME [FILE] [--to ADDRESS] [--wait] [--timeout S]
                 [--token-file F]
    pymoult push SCRIPT --to pipe:PATH [--timeout S] [--token-file F]
    pymoult push SCRIPT | --module NAME [FILE] --to A --to B ... [--to-file F] [--canary N]
                 [--wave N] [--two-phase [--hold S]] [--timeout S] [--token-file F]
    pymoult push --dask SCHEDULER --module NAME FILE [--canary N] [--wave N] [--timeout S]
    pymoult rollback [--to ADDRESS] [NAME ...] [--timeout S]
    pymoult status [--to ADDRESS] [--json]
    pymoult history [--to ADDRESS] [--json]
    pymoult demo [EXAMPLE [ARGUMENTS...]]
    pymoult token

Exit codes: ``run`` exits with the application's code (130 when stopped by Ctrl-C); the other
commands exit 0 on success, 1 when a pushed script raised or one of its updates did not apply
(or was not reverted), 3 when the listener could not be reached or refused the request, 2 for
bad usage. A push to several applications (a rollout), or to a Dask cluster, exits 0 when every
one was updated, 1 when it halted and every one is on the old version, 4 when they are not all
on one version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import client
from .errors import (AuthenticationError, ListenerError, ProtocolError, PymoultError,
                     PymoultValueError, RevertError)
from .exit_status import FAILED, INTERRUPTED, LISTENING, SPLIT, UNREACHABLE, USAGE_ERROR

if TYPE_CHECKING:
    from .delivery import Listener, PipeListener
    from .highlevel.file_watch import FileWatcher
    from .highlevel.managers import ThreadedManager
    from .highlevel.runner import Runtime, RuntimeLog
    from .protocol import Message
    from .rollout import ProcessReport, RolloutReport


def _token_from_file(path: str | os.PathLike[str] | None) -> str | None:
    if path is None:
        return None
    from .protocol import read_token_file
    return read_token_file(path)


# -- run -------------------------------------------------------------------------------------

def write_address_file(path: str | os.PathLike[str], address: str) -> None:
    """Write ``address`` (and a newline) to file ``path``, safely in a shared directory.

    The text goes to a new file of a random name in the same directory, created with
    ``O_EXCL|O_NOFOLLOW`` (so neither a file nor a symlink planted there is written through),
    then renamed over ``path``, which replaces whatever ``path`` was, a symlink included,
    without following it: readers never see half an address, and no other file is written.
    ``PymoultValueError`` (one sentence) when it cannot be written.
    """
    import secrets

    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path),
                       f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o644)
    except OSError as exc:
        raise PymoultValueError(f"cannot write the address file {path}: "
                                f"{exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w") as out:
            out.write(address + "\n")
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise PymoultValueError(f"cannot write the address file {path}: "
                                f"{exc.strerror or exc}") from None


def _runtime_log(args: argparse.Namespace) -> RuntimeLog:
    """The RuntimeLog that ``-v``, ``--log-level`` and ``--log-file`` ask for (exits 2 for a
    mistake in them)."""
    from .highlevel.runner import RuntimeLog

    if args.verbose and args.log_level is not None:
        _fail_usage("run: give -v or --log-level, not both")
    level = args.log_level if args.log_level is not None else \
        (min(args.verbose, 2) if args.verbose else None)
    try:
        return RuntimeLog(level, args.log_file)
    except OSError as exc:
        _fail_usage(f"run: cannot write the log to {args.log_file!r}: "
                    f"{exc.strerror or exc}")


def _run(args: argparse.Namespace) -> int:
    with _runtime_log(args):  # shows Pymoult's warnings about the listener, too
        return _run_logged(args)


def _run_logged(args: argparse.Namespace) -> int:
    from .delivery import Listener, PipeListener
    from .highlevel.runner import Runtime, load_application
    from .source_tracking import track_sources

    track_sources()  # every module the application imports: edit its file, then push --module
    path: str | None
    module: str | None
    app_args: list[str]
    if args.module is not None:
        path, module, app_args = None, args.module, args.target
    elif args.target:
        path, module, app_args = args.target[0], None, args.target[1:]
    else:
        _fail_usage("run: give the application, as a script path or -m module")
    try:
        application = load_application(path=path, module=module, args=app_args)
    except SyntaxError as exc:
        import traceback
        sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
        return FAILED
    except (OSError, PymoultError) as exc:
        print(f"pymoult run: {exc}", file=sys.stderr)
        return FAILED

    listeners: list[Listener | PipeListener] = []  # the one make_listener built

    def make_listener(manager: ThreadedManager) -> Listener | PipeListener:
        listener: Listener | PipeListener | None = None
        if args.listen is not None:
            from .protocol import parse_address
            where = parse_address(args.listen)
            if where.family == "pipe":
                assert where.path is not None  # a pipe's address has its path
                listener = PipeListener(where.path, token_file=args.token_file)
        if listener is None:
            # every live manager: the runtime's and those the application creates itself (a
            # program written for the original Pymoult has its own)
            listener = Listener(address=args.listen, token_file=args.token_file)
        listeners.append(listener)
        return listener

    watchers: list[FileWatcher] = []
    registered: list[Callable[[], None]] = []

    def ready(runtime: Runtime) -> None:
        if args.watch is not None:
            from .highlevel.file_watch import FileWatcher
            paths = [path for path in args.watch if path] or [application.path_entry]

            def report(line: str) -> None:
                print(f"pymoult: {line}", file=sys.stderr, flush=True)

            assert runtime.manager is not None  # started before on_ready is called
            watcher = FileWatcher(paths, runtime.manager, report)
            watcher.start()
            watchers.append(watcher)
            watcher.ready.wait(5.0)
            print(f"pymoult: watching {', '.join(watcher.paths)}", file=sys.stderr, flush=True)
        if not listeners:
            return
        address = listeners[0].address
        print(f"{LISTENING}{address}", file=sys.stderr, flush=True)
        if args.address_file:
            write_address_file(args.address_file, address)
        from .running_apps import register
        try:
            registered.append(register(address, path if path is not None else f"-m {module}"))
        except (OSError, PymoultError) as exc:  # pymoult ps will not list it; nothing else
            print(f"pymoult: warning: not listed by pymoult ps: {exc}", file=sys.stderr,
                  flush=True)

    runtime = Runtime(application, listener_factory=None if args.no_listen else make_listener,
                      on_ready=ready)
    try:
        code = runtime.run()
    except (OSError, PymoultError) as exc:  # the listener (or the watch) could not be set up
        print(f"pymoult run: {exc}", file=sys.stderr)
        return FAILED
    finally:
        for watcher in watchers:
            watcher.stop(2.0)
        for unregister in registered:
            unregister()
    if runtime.forced:  # application threads may still run: do not wait for them
        sys.stdout.flush()
        sys.stderr.flush()
        if runtime.stopped_by is not None:  # cleaned up: now end as the signal would have
            signal.signal(runtime.stopped_by, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {runtime.stopped_by})
            os.kill(os.getpid(), runtime.stopped_by)
        os._exit(code)
    return code


# -- push ------------------------------------------------------------------------------------

def _read_script(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as source:
        return source.read()


def _push_script(args: argparse.Namespace) -> str:
    """The script to send: the one given, or one made from ``--module NAME FILE`` pairs."""
    if (args.script is None) == (not args.module):
        _fail_usage("push: give an update script, or --module NAME [FILE] (not both)")
    if args.script is not None:
        return _read_script(args.script)
    from .highlevel.module_update import module_update_script
    from .lowlevel.source_diff import read_source

    sources: dict[str, str | None] = {}
    filenames: dict[str, str] = {}
    for values in args.module:
        if len(values) > 2:
            _fail_usage(f"push: --module takes a module name and at most one file, got "
                        f"{' '.join(values)}")
        name = values[0]
        if name in sources:
            _fail_usage(f"push: module {name} given twice")
        sources[name] = read_source(values[1]) if len(values) == 2 else None
        if len(values) == 2:
            filenames[name] = os.path.abspath(values[1])
    return module_update_script(sources, filenames=filenames)


def _addresses(args: argparse.Namespace) -> list[str | None]:
    """The addresses a push goes to: each ``--to``, then each line of ``--to-file`` (blank
    lines and ``#`` comments skipped); ``[None]`` ($PYMOULT_ADDRESS) when none is given."""
    addresses: list[str | None] = list(args.to or ())
    if args.to_file is not None:
        try:
            with open(args.to_file, encoding="utf-8") as lines:
                addresses += [line.strip() for line in lines
                              if line.strip() and not line.lstrip().startswith("#")]
        except (OSError, UnicodeDecodeError) as exc:
            _fail_usage(f"push: cannot read --to-file {args.to_file}: {exc}")
        if not addresses:
            _fail_usage(f"push: {args.to_file} names no address")
    return addresses or [None]


def _push_script_or_none(args: argparse.Namespace) -> str | None:
    """The script to push, or None once the reason it cannot be read is printed."""
    try:
        return _push_script(args)
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:
        what = args.script if args.script is not None else "a module's new version"
        print(f"pymoult push: cannot read {what}: {exc}", file=sys.stderr)
        return None


def _push_dask(args: argparse.Namespace) -> int:
    """``pymoult push --dask SCHEDULER --module NAME FILE [--canary N] [--wave N]``: the module
    updated on every worker of a Dask cluster (``pymoult.delivery.dask_cluster.update_cluster``):
    all at once, or a canary then waves, reported and exiting as a rollout over listeners."""
    if args.script is not None or not args.module or len(args.module) != 1 \
            or len(args.module[0]) != 2:
        _fail_usage("push --dask: give one --module NAME FILE (the module's new version)")
    if args.to or args.to_file or args.two_phase or args.hold is not None:
        _fail_usage("push --dask: --to, --to-file, --two-phase and --hold are for listeners; a "
                    "Dask cluster is reached through its scheduler (its prepare phase is always "
                    "first)")
    try:
        import distributed

        from .delivery.dask_cluster import update_cluster
    except ImportError:
        _fail_usage("push --dask needs Dask's distributed package: pip install 'pymoult[dask]'")
    name, path = args.module[0]
    timeout = 30.0 if args.timeout is None else args.timeout
    try:
        client = distributed.Client(args.dask, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        print(f"pymoult push: cannot reach the Dask scheduler at {args.dask}: {exc}",
              file=sys.stderr)
        return UNREACHABLE
    try:
        report = update_cluster(client, name, path=path, timeout=timeout,
                                canary=args.canary or 0, wave=args.wave,
                                on_stage=None if args.json else _show_stage)
    finally:
        client.close()
    fleet = report.fleet
    assert fleet is not None  # an update's report has its rollout's
    if args.json:
        print(json.dumps({"module": report.module, "version": report.version,
                          "ok": report.ok, "summary": report.summary,
                          "seconds": report.seconds, "skew": report.skew,
                          "fleet": fleet.as_dict(),
                          "steps": [dataclasses.asdict(r) for r in report.results]}, indent=2))
        return _fleet_exit_status(fleet)
    for result in report.results:  # what the stages did not show: a worker off the versions
        if result.step == "publish" and not result.ok:
            print(f"{result.worker}  publish: FAILED - {result.message}")
    return _show_fleet_end(fleet, summary=f"update {report.version}: {report.summary}")


def _show_stage(stage: str, reports: list[ProcessReport]) -> None:
    """A rollout's ``on_stage``: one line per process of the stage, as it ends."""
    for report in reports:
        print(report.line(), flush=True)


def _show_fleet_end(fleet: RolloutReport, summary: str | None = None) -> int:
    """After a rollout's stages: the lines of the processes rolled back and of those not
    tried, the summary; returns the exit status."""
    for process in fleet.processes:
        if process.outcome in ("rolled back", "rollback failed"):
            print(process.line())
    for process in fleet.processes:
        if process.outcome == "not tried":
            print(process.line())
    print(fleet.summary if summary is None else summary)
    return _fleet_exit_status(fleet)


def _fleet_exit_status(fleet: RolloutReport) -> int:
    """0 when every process is on the new version, 1 on the old, 4 neither."""
    from .rollout import NEW, OLD

    return {NEW: 0, OLD: FAILED}.get(fleet.version, SPLIT)


def _push(args: argparse.Namespace) -> int:
    if args.dask is not None:
        return _push_dask(args)
    addresses = _addresses(args)
    if len(addresses) > 1 or args.canary is not None or args.wave is not None \
            or args.two_phase or args.hold is not None:
        return _push_fleet(args, addresses)
    args.to = addresses[0]
    where = client.resolve_address(args.to)
    if where.family == "pipe" and args.wait:
        _fail_usage(f"push: --wait needs a reply, and a named pipe carries none: push to "
                    f"{where} without --wait (the application logs the outcome), or to its "
                    "socket listener")
    script = _push_script_or_none(args)
    if script is None:
        return USAGE_ERROR
    token = _token_from_file(args.token_file)
    if where.family == "pipe":
        client.push(where, script, wait=False, timeout=args.timeout, token=token)
        if args.json:
            print(json.dumps({"delivered": True, "address": str(where), "reply": None}))
        else:
            print(f"sent to {where}; a pipe carries no reply: the application logs the outcome "
                  "(pymoult run shows failures on its stderr, and successes with -v)")
        return 0
    outcome: dict[str, Any] = {}  # "reply": the push's reply, or "error": what it raised

    def send() -> None:
        try:
            outcome["reply"] = client.push(args.to, script, wait=args.wait,
                                           timeout=args.timeout, token=token)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=send, name="pymoult push", daemon=True)
    worker.start()
    _show_progress(worker, args, token)
    if "error" in outcome:
        raise outcome["error"]
    reply = outcome["reply"]
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        _print_push_reply(reply, generated=bool(args.module))
    return 0 if reply.get("ok") else FAILED


def _push_fleet(args: argparse.Namespace, addresses: list[str | None]) -> int:
    """``pymoult push`` to several applications: a rollout (``pymoult.rollout``)."""
    from .rollout import rollout

    # a rollout always waits (--wait or not): each wave needs the outcome of the last
    script = _push_script_or_none(args)
    if script is None:
        return USAGE_ERROR
    token = _token_from_file(args.token_file)

    try:
        report = rollout(addresses, script, token=token,
                         canary=1 if args.canary is None else args.canary,
                         wave=1 if args.wave is None else args.wave, timeout=args.timeout,
                         on_stage=None if args.json else _show_stage,
                         two_phase=args.two_phase, hold=args.hold)
    except PymoultValueError as exc:  # a bad list of addresses, canary or wave
        _fail_usage(f"push: {exc}")
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return _fleet_exit_status(report)
    return _show_fleet_end(report)


def _rollback(args: argparse.Namespace) -> int:
    reply = client.rollback(args.to, args.names or None, timeout=args.timeout,
                            token=_token_from_file(args.token_file))
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        for update in reply.get("updates", []):
            print(_update_line(update))
        if reply.get("not_reverted"):
            print("still applied: " + ", ".join(reply["not_reverted"]))
        print("ok" if reply.get("ok") else "FAILED")
    return 0 if reply.get("ok") else FAILED


def _show_progress(worker: threading.Thread, args: argparse.Namespace,
                   token: str | None) -> None:
    """Wait for ``worker``; on a terminal, show what the application's manager is doing on
    one line of stderr (where it cannot mix with the outcome, or the JSON, on stdout)."""
    if not (args.wait and sys.stderr.isatty()):
        worker.join()
        return
    width = max(20, min(shutil.get_terminal_size((100, 24)).columns - 1, 200))
    started, shown = time.monotonic(), False
    while True:
        worker.join(0.5)
        if not worker.is_alive():
            break
        try:
            status: Message = client.status(args.to, token=token, timeout=2.0)
        except PymoultError:
            status = {}  # progress is best effort; the push itself reports any failure
        line = _progress_line(time.monotonic() - started, status)
        sys.stderr.write("\r" + line[:width].ljust(width))
        sys.stderr.flush()
        shown = True
    if shown:
        sys.stderr.write("\r" + " " * width + "\r")


def _progress_line(elapsed: float, status: Message) -> str:
    """The progress line ``pymoult push --wait`` draws, from a ``status`` reply: each
    manager's current update, its state, and how far it got, e.g. ``waiting 12.5 s | greet v2:
    waiting for alterability 2.5 s of 10 s, try 3/10`` or ``waiting 3.0 s | convert Point:
    applying, 40960/100000 objects (eager update of app.Point)``."""
    parts = [f"waiting {elapsed:5.1f} s"]
    for manager in status.get("managers") or []:
        current = manager.get("current")
        if not current:
            continue
        text = f"{current['name']}: {current['state']}"
        if current.get("waited") is not None:
            text += f" {current['waited']:.1f} s of {current.get('patience', 0):g} s"
        if (current.get("tries") or 0) > 1:
            text += f", try {current['tries']}/{current.get('max_tries', '?')}"
        if current.get("postponements"):
            text += f", postponed {current['postponements']} time(s)"
        progress = current.get("progress")
        if progress and current["state"] == "applying":
            text += f", {progress['done']}/{progress['total']} objects ({progress['step']})"
        parts.append(text)
    return " | ".join(parts)


def _update_line(update: Message) -> str:
    """One update's outcome in a reply, as a line: ``update 'greet v2': applied``."""
    line = f"update {update['name']!r}: {update['state']}"
    if not update.get("finished", True):
        line += " (not finished)"
    if update.get("error"):
        line += f" - {update['error']}"
    return line


def _print_push_reply(reply: Message, generated: bool = False) -> None:
    """``generated``: the script was made by ``--module``; its own frames are no business of
    the user's (a ModuleUpdateError's message holds the new version's traceback)."""
    error = reply.get("script_error")
    if error is not None:
        if generated and error["type"] == "ModuleUpdateError":
            print(f"not applied: {error['message']}")
        else:
            print(f"script raised {error['type']}: {error['message']}")
            if error.get("traceback"):
                print(error["traceback"].rstrip())
    updates = reply.get("updates", [])
    if not updates:
        print("the script queued no update")
    for update in updates:
        print(_update_line(update))
        for step in update.get("steps") or ():
            print(f"  {step}")
        for warning in update.get("warnings") or ():
            print(f"  warning: {warning}")
    print("ok" if reply.get("ok") else "FAILED")


# -- status and history ----------------------------------------------------------------------

def _table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def _ps(args: argparse.Namespace) -> int:
    from .running_apps import running

    records = running()
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("no application of yours is running under pymoult run")
        return 0
    now = time.time()
    print(_table([(r["pid"], r["address"], _age(now - r.get("started", now)), r["application"])
                  for r in records], ("pid", "address", "running for", "application")))
    return 0


def _age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _status(args: argparse.Namespace) -> int:
    reply = client.status(args.to, token=_token_from_file(args.token_file))
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    listener = reply.get("listener") or {}
    applied = listener.get("applied_total", len(listener.get("applied_updates", [])))
    print(f"listener {listener.get('name', '?')} at {listener.get('address', '?')}, "
          f"{applied} update(s) applied through it")
    for script in listener.get("scripts") or ():
        print(f"script {script['number']} running for {script['age']:.1f} s in thread "
              f"{script['thread']}" + (f": {script['note']}" if script.get("note") else ""))
    rows = []
    for manager in reply.get("managers", []):
        stats = manager.get("statistics") or {}
        finished = ", ".join(f"{n} {state}" for state, n in sorted(
            (stats.get("finished") or {}).items())) or "-"
        current = manager.get("current")
        rows.append((manager["name"], manager["kind"],
                     "-" if current is None else f"{current['name']} ({current['state']})",
                     len(manager.get("pending", [])), finished, _ms(stats.get("pause_median"))))
    if rows:
        print(_table(rows, ("manager", "kind", "current", "queued", "finished",
                            "median pause")))
    else:
        print("no manager")
    return 0


def _history(args: argparse.Namespace) -> int:
    reply = client.history(args.to, token=_token_from_file(args.token_file))
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    rows = []
    for manager in reply.get("managers", []):
        for record in manager.get("history", []):
            steps = record.get("steps") or {}
            rows.append((manager["name"], record["name"], record["state"],
                         _ms(steps.get("applied")), _ms(record.get("pause")),
                         len(record.get("operations", [])), record.get("error") or ""))
    if rows:
        print(_table(rows, ("manager", "update", "state", "applied after", "pause",
                            "operations", "error")))
    else:
        print("no update has finished yet")
    for manager in reply.get("managers", []):
        forgotten = manager.get("forgotten") or {}
        if forgotten:
            print(f"{manager['name']}: {sum(forgotten.values())} older record(s) not kept: "
                  + ", ".join(f"{n} {state}" for state, n in sorted(forgotten.items())))
    return 0


# -- the command line ------------------------------------------------------------------------

def _fail_usage(message: str) -> NoReturn:
    print(f"pymoult: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    from .protocol import MAX_TIMEOUT
    if not 0 < value <= MAX_TIMEOUT:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be > 0 and at most {MAX_TIMEOUT:g} s, "
                                         f"got {text}")
    return value


def _demo_description(listed: bool = True) -> str:
    text = textwrap.fill("Start an example application under pymoult run, push its update "
                         "scripts (update.py, update2.py...) one after the other, and show "
                         "its output change while it runs.", 79)
    if not listed:
        return text
    from .demo import known_examples

    examples = known_examples()
    if not examples:
        return text + "\n\n" + textwrap.fill(
            "No example found here: the examples are in Pymoult's source checkout "
            "(examples/); a directory holding app.py and update.py works too.", 79)
    width = max(len(name) for name, _ in examples)
    return text + "\n\nexamples:\n" + "\n".join(
        f"  {name.ljust(width)}  {summary}" for name, summary in examples)


def _address(text: str) -> str:
    """A ``--to`` value: an address, or the pid of one of this user's ``pymoult run``
    processes (``pymoult ps``), turned into its address."""
    if not text.isdigit():
        return text
    from .running_apps import address_of
    try:
        return address_of(int(text))
    except PymoultError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(minimum: int) -> Callable[[str], int]:
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value
    return count


#: ``--log-level`` names of the original's levels.
_LEVEL_NAMES = {"0": 0, "1": 1, "2": 2, "warning": 0, "info": 1, "debug": 2}


def _log_level(text: str) -> int:
    try:
        return _LEVEL_NAMES[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"the level must be 0, 1, 2, warning, info or debug, "
                                         f"got {text!r}") from None


def build_parser(examples: bool = True) -> argparse.ArgumentParser:
    """The command's parser; ``examples``: list the examples in ``demo --help`` (they are
    looked for on disk, so the other commands skip it)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="pymoult", description="Update a running Python "
                                     "program without stopping it.")
    parser.add_argument("--version", action="version",
                        version=f"pymoult {__version__} (Python {sys.version.split()[0]})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run an application under the Pymoult runtime",
                              description="Run app.py (or -m module) in a Runner thread; the "
                              "main thread hosts the update manager and the listener. The "
                              "pymoult log (the application's log(0, ...) lines, Pymoult's "
                              "warnings and errors) shows on stderr as 'pymoult: ...' lines, "
                              "unless the application configures logging itself (a handler "
                              "on the root or pymoult logger, logging.basicConfig(), "
                              "set_logpath()): its configuration then shows them.")
    run.add_argument("--listen", metavar="ADDRESS",
                     help="unix:/path or tcp:host:port (TCP needs a token), or pipe:/path (a "
                     "named pipe: pushes only, no replies); default: a Unix socket in a new "
                     "private directory")
    run.add_argument("--no-listen", action="store_true", help="start no listener")
    run.add_argument("--token-file", help="file holding the token clients must send")
    run.add_argument("--address-file", help="write the listen address to this file")
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="show more of the pymoult log: -v level 1 (INFO: Pymoult's steps, "
                     "the application's log(1, ...)), -vv level 2 (DEBUG)")
    run.add_argument("--log-level", type=_log_level, metavar="LEVEL",
                     help="the pymoult log's level: 0 or warning (the default: the "
                     "application's log(0, ...) lines and Pymoult's warnings), 1 or info, "
                     "2 or debug")
    run.add_argument("--log-file", metavar="PATH",
                     help="append the pymoult log to PATH (with time, level and thread) "
                     "instead of showing it on stderr")
    run.add_argument("--watch", nargs="?", const="", action="append", metavar="PATH",
                     help="development mode: apply every saved change of a loaded module's "
                     "file to the running application (one update per burst of saves; a "
                     "syntax error prints one line and waits for the next save). --watch alone "
                     "watches the application's directory; --watch DIR [DIR ...] or "
                     "--watch=PATH chooses")
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as python -m")
    run.add_argument("target", nargs=argparse.REMAINDER,
                     help="app.py and its arguments (with -m: the module's arguments)")

    def client_options(sub: argparse.ArgumentParser, pipe: bool = False) -> None:
        if not pipe:
            sub.add_argument("--to", metavar="ADDRESS", default=None, type=_address,
                             help="the listener's address (default: $PYMOULT_ADDRESS): a "
                                  "socket, unix:/path or tcp:host:port (a pipe carries no "
                                  "reply), or the pid of a pymoult run process (pymoult ps)")
        sub.add_argument("--token-file", help="file holding the token (default: "
                         "$PYMOULT_TOKEN)")
        sub.add_argument("--json", action="store_true", help="print the reply as JSON")

    push = commands.add_parser(
        "push", help="send an update script, or new versions of modules, to a running "
                     "application",
        description="Send an update script (or, with --module, the new version of modules, "
                    "from their files) to the application listening at --to, which runs it in "
                    "a thread of its own; with --wait, report how each update it queued ended. "
                    "Several --to (or --to-file) make a rollout: a canary, then waves, halted "
                    "and rolled back at the first failure (or, with --two-phase, every "
                    "application prepared, then all committed at once). Exit status: 0 "
                    "applied, 1 not applied, 2 bad usage, 3 listener unreachable or refusing; "
                    "a rollout: 0 all updated, 1 all on the old version, 4 neither.")
    push.add_argument("script", nargs="?", help="the update script (- reads standard input)")
    push.add_argument("--module", nargs="+", action="append", metavar="NAME [FILE]",
                      help="update module NAME to its own file as it is now (edited in place or "
                           "installed over), or to the source in FILE (a ModuleUpdate made in "
                           "the application; repeat it to change several modules in one update)")
    push.add_argument("--wait", action="store_true",
                      help="wait for the updates the script queued and report their outcome "
                      "(not over a pipe, which carries no reply)")
    push.add_argument("--timeout", type=_positive, default=None,
                      help="seconds to wait for the script and its updates")
    client_options(push, pipe=True)
    push.add_argument("--to", metavar="ADDRESS", action="append", default=None, type=_address,
                      help="the listener's address (default: $PYMOULT_ADDRESS), or the pid of "
                           "a pymoult run process (pymoult ps); pipe:/path "
                           "writes into a PipeListener's named pipe, which sends no reply. "
                           "Repeat it to update several applications: a rollout (a canary, "
                           "then waves; halted and rolled back at the first failure)")
    push.add_argument("--to-file", metavar="FILE",
                      help="a file of addresses, one per line, to update as a rollout")
    push.add_argument("--canary", type=_count(0), default=None, metavar="N",
                      help="rollout: how many applications to update first, alone (default "
                           "1; 0: none; with --dask, workers, default 0)")
    push.add_argument("--wave", type=_count(1), default=None, metavar="N",
                      help="rollout: how many applications to update at once after the "
                           "canary (default 1; with --dask, workers, default all at once)")
    push.add_argument("--dask", metavar="SCHEDULER",
                      help="update --module NAME FILE on every worker of the Dask cluster whose "
                           "scheduler is at SCHEDULER (tcp://host:port), live, through Dask's "
                           "own mechanisms (needs pymoult[dask]); with --canary and --wave, "
                           "a rollout over the workers, halted and undone at the first failure")
    push.add_argument("--two-phase", action="store_true",
                      help="rollout: prepare every application (its updates alterable, its "
                           "threads held), then commit them all at once, so that they switch "
                           "within one short window; one failing to prepare aborts them all")
    push.add_argument("--hold", type=_positive, default=None, metavar="S",
                      help="with --two-phase: how long a prepared application waits for the "
                           "commit before it aborts by itself (default 5 s; its threads are "
                           "held meanwhile)")
    rollback = commands.add_parser(
        "rollback", help="revert updates that pushes applied to a running application",
        description="Revert, newest first, the updates applied by the last push (or those "
                    "named), each at a safe point through its journal. Only the newest "
                    "updates can be reverted: one applied after another is reverted first.")
    rollback.add_argument("names", nargs="*", metavar="NAME",
                          help="the updates to revert (default: those of the last push)")
    rollback.add_argument("--timeout", type=_positive, default=None,
                          help="seconds to wait for the reverts")
    client_options(rollback)
    client_options(commands.add_parser(
        "status", help="what the application's managers do",
        description="Show the listener (its address, the updates applied through it, the "
                    "scripts still running) and each manager: its current update and how far it "
                    "got, its queue, and counts of finished updates."))
    client_options(commands.add_parser(
        "history", help="the updates that have finished",
        description="List the updates each manager has finished: final state, when they "
                    "applied, how long the threads were held, their operations and errors."))
    ps = commands.add_parser(
        "ps", help="list your applications running under pymoult run",
        description="List this user's applications running under pymoult run, with their "
                    "pid and listener address: --to PID reaches one by its pid.")
    ps.add_argument("--json", action="store_true", help="print the list as JSON")
    commands.add_parser("token", help="print a fresh random token (for --token-file or "
                        "PYMOULT_TOKEN)", description="Print a fresh random token: 32 random "
                        "bytes, URL-safe base64. Keep it in a file only you can read: "
                        "pymoult token > FILE; chmod 600 FILE.")
    demo = commands.add_parser("demo", help="start an example, update it live, show the change",
                               description=_demo_description(examples),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("example", nargs="?",
                      help="an example's name (examples/NAME in a source checkout) or a "
                           "directory holding app.py and update*.py (default: a built-in "
                           "hello world)")
    demo.add_argument("arguments", nargs=argparse.REMAINDER,
                      help="arguments for the example's app.py")
    return parser


#: ``pymoult run`` options that take a value (the splitting below must skip it).
_RUN_VALUE_OPTIONS = {"--listen", "--token-file", "--address-file", "--log-level", "--log-file"}


def _split_run(tokens: list[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """``pymoult run`` tokens as (pymoult's options, script, module, application arguments).

    Everything after the script or ``-m MODULE`` belongs to the application, options included
    (``pymoult run -m pkg --help`` is the module's help), as with ``python``.
    """
    options: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "-m":
            if i + 1 == len(tokens):
                _fail_usage("run: -m needs a module name")
            return options, None, tokens[i + 1], tokens[i + 2:]
        if token.startswith("-m") and not token.startswith("--"):  # -mmodule
            return options, None, token[2:], tokens[i + 1:]
        if token == "--watch":  # --watch [DIR ...]: the directories that follow, if any
            options.append(token)
            while i + 1 < len(tokens) and os.path.isdir(tokens[i + 1]):
                options.append(f"--watch={tokens[i + 1]}")
                i += 1
            i += 1
            continue
        if token.startswith("-") and token != "-":
            options.append(token)
            if token in _RUN_VALUE_OPTIONS and i + 1 < len(tokens):
                options.append(tokens[i + 1])
                i += 1
            i += 1
            continue
        return options, token, None, tokens[i + 1:]
    return options, None, None, []


#: What the line printed on Ctrl-C says goes on, per command.
_INTERRUPTED = {
    "push": "what was sent goes on in the application (its updates apply or fail there; "
            "pymoult status shows them), and nothing more is sent",
    "rollback": "the reverts already asked for go on in the application (pymoult status "
                "shows them)",
    "status": "nothing was changed",
    "history": "nothing was changed",
    "ps": "nothing was changed",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        options, script, module, app_args = _split_run(argv[1:])
        args = build_parser(examples=False).parse_args(["run", *options])
        args.module = module
        args.target = [] if script is None and module is None else \
            ([script] if script is not None else []) + app_args
        return _run(args)
    args = build_parser(examples=argv[:1] == ["demo"]).parse_args(argv)
    if args.command == "demo":
        from .demo import demo
        return demo(args.example, args.arguments)
    if args.command == "token":
        from .protocol import new_token
        print(new_token())
        return 0
    handlers = {"push": _push, "rollback": _rollback, "status": _status, "history": _history,
                "ps": _ps}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:  # Ctrl-C: what was sent is the application's now
        print(f"pymoult {args.command}: interrupted; {_INTERRUPTED[args.command]}",
              file=sys.stderr)
        return INTERRUPTED
    except (ListenerError, ProtocolError, AuthenticationError) as exc:
        print(f"pymoult {args.command}: {exc}", file=sys.stderr)
        return UNREACHABLE
    except RevertError as exc:  # nothing by those names to roll back
        print(f"pymoult {args.command}: {exc}", file=sys.stderr)
        return FAILED
    except PymoultError as exc:  # a bad address, an unreadable token file
        print(f"pymoult {args.command}: {exc}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
