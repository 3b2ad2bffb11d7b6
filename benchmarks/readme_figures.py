"""Write the benchmark tables of ``docs/benchmarks.md`` from recorded runs of ``run_all.py``.

    python benchmarks/readme_figures.py RESULTS.json [RESULTS.json ...] [--target PATH]

``--target`` (or ``--readme``, its name when the tables were in the README) names another
Markdown file to rewrite.

Each RESULTS.json is the combined JSON of one ``run_all.py`` run (one per Python version; its
default name is ``benchmarks/results/all-<major.minor>.json``). The tables' columns are the
versions given, in version order. Only the text between each pair of markers

    <!-- figures:NAME -->
    ...
    <!-- /figures:NAME -->

is rewritten (NAME: see ``TABLES``); the markers and everything outside them are kept as they
are. The same inputs always give the same text. A missing or repeated marker, a run that lacks a
figure (a benchmark that failed, a field renamed) or two runs of one version end the program
with one sentence saying which, and the file is left untouched.
"""

import argparse
import datetime
import json
import pathlib
import sys

#: The file whose tables are rewritten unless told otherwise.
TARGET = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
NOT_MEASURED = "n/a"


class FigureError(Exception):
    """The tables cannot be written: a marker or a figure is missing (the message says which)."""


# -- reading the runs --------------------------------------------------------------------------

class Figures(dict):
    """A dict of a run's results whose missing keys raise FigureError naming the file and path."""

    def __init__(self, value, where, path):
        super().__init__(value)
        self.where, self.path = where, path

    def __getitem__(self, key):
        path = self.path + (str(key),)
        if key not in self:
            raise FigureError(f"{self.where} lacks the figure {' > '.join(path)}")
        return _wrap(super().__getitem__(key), self.where, path)


def _wrap(value, where, path):
    if isinstance(value, dict):
        return Figures(value, where, path)
    if isinstance(value, list):
        return [_wrap(item, where, path + (str(index),)) for index, item in enumerate(value)]
    return value


class Run:
    """One ``run_all.py`` run: its figures looked up by path, with errors that name them."""

    def __init__(self, path, document):
        self.name = pathlib.Path(path).name
        self.document = document
        version = str(self.top("python"))
        parts = version.split(".")
        if len(parts) < 2 or not all(part.isdigit() for part in parts[:2]):
            raise FigureError(f"{self.name}: 'python' is {version!r}, not a version")
        self.version = version
        self.key = (int(parts[0]), int(parts[1]))
        self.column = f"{parts[0]}.{parts[1]}"

    @classmethod
    def load(cls, path):
        try:
            document = json.loads(pathlib.Path(path).read_text())
        except OSError as exc:
            raise FigureError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise FigureError(f"{path} is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise FigureError(f"{path} is not a run_all.py JSON (not an object)")
        return cls(path, document)

    def top(self, key):
        if key not in self.document:
            raise FigureError(f"{self.name} lacks {key!r}: is it a JSON written by run_all.py?")
        return self.document[key]

    def outcome(self, benchmark):
        outcome = self.top("benchmarks").get(benchmark)
        if outcome is None:
            raise FigureError(f"{self.name} has no {benchmark!r} benchmark (was it run with "
                              "--only?)")
        if outcome.get("status") != "ok":
            raise FigureError(f"{self.name}: the {benchmark!r} benchmark did not give figures "
                              f"({outcome.get('status')}: {outcome.get('why')})")
        return outcome

    def get(self, benchmark, *keys):
        """``benchmarks[benchmark].results[keys...]``; FigureError naming the path if absent."""
        value = Figures(self.outcome(benchmark)["results"], self.name, (benchmark,))
        for key in keys:
            value = value[key]
        return value

    def has(self, benchmark, *keys):
        try:
            self.get(benchmark, *keys)
        except FigureError:
            return False
        return True


def load_runs(paths):
    runs = sorted((Run.load(path) for path in paths), key=lambda run: run.key)
    for before, after in zip(runs, runs[1:]):
        if before.key == after.key:
            raise FigureError(f"{before.name} and {after.name} are both runs of Python "
                              f"{before.column}: give one run per version")
    if not runs:
        raise FigureError("no run given")
    return runs


# -- formatting ---------------------------------------------------------------------------------

def num(value, decimals=0):
    return f"{value:,.{decimals}f}"


def ms(value):
    """Three significant figures or so: 0.43, 2.2, 15.1, 118, 4,803."""
    return num(value, 2 if value < 1 else 1 if value < 100 else 0)


def count(value):
    """A count of calls: 850, 26,000, 3.9M."""
    return f"{value / 1e6:.1f}M" if value >= 1e6 else num(value)


def size(value):
    return num(int(value))


def distinct(items):
    """``items`` without repeats, in the order they first appear."""
    return list(dict.fromkeys(items))


def union(key_lists):
    """The keys of every run, in the order they first appear (runs in version order)."""
    return distinct(key for keys in key_lists for key in keys)


def per_run(runs, cell):
    """One cell per run; NOT_MEASURED where ``cell`` returns None."""
    cells = [cell(run) for run in runs]
    return [NOT_MEASURED if value is None else value for value in cells]


# -- the summary table ---------------------------------------------------------------------------

def run_rows(runs):
    def took(run, benchmark):
        return num(run.outcome(benchmark)["seconds"])
    yield ("run time: all benchmarks / module update benchmark (s)",
           [f"{num(run.top('seconds'))} / {took(run, 'module_update')}" for run in runs])


def core_rows(runs):
    def net(run, name):
        return run.get("core", "idle_point", "net_ns", name)
    yield ("idle `staticUpdatePoint()` / empty call, net (ns)",
           [f"{run.get('core', 'idle_point', 'ratio_point_vs_empty_call'):.2f}x "
            f"({net(run, 'staticUpdatePoint()'):.1f} / {net(run, 'empty function call'):.1f})"
            for run in runs])
    yield ("idle `update_point()` / empty call, net",
           [f"{run.get('core', 'idle_point', 'ratio_zero_arg_point_vs_empty_call'):.2f}x"
            for run in runs])
    yield ("loop with `staticUpdatePoint()` / same loop with no point",
           [f"{run.get('core', 'idle_point', 'ratio_point_vs_no_point'):.2f}x" for run in runs])
    yield ("the original Pymoult's point / `staticUpdatePoint()`, net",
           [f"{run.get('core', 'idle_point', 'ratio_original_pymoult_vs_point'):.1f}x"
            for run in runs])
    for label, key in (("`suspend()` -> parked", "park_us"),
                       ("`resume()` -> running again", "wake_us")):
        yield (f"{label}, median / p99 (us)",
               [f"{num(run.get('core', 'park_and_wake', key, 'median'))} / "
                f"{num(run.get('core', 'park_and_wake', key, 'p99'))}" for run in runs])
    for label in union(run.get("core", "stop_the_world") for run in runs):
        def world(run, label=label):
            if not run.has("core", "stop_the_world", label):
                return None
            row = run.get("core", "stop_the_world", label)
            return (f"{row['entry_ms_median']:.2f} / {row['entry_ms_p99']:.2f} "
                    f"({row['interleaved_exclusive_windows']})")
        yield (f"stop-the-world entry, {label}: median / p99 (ms) (exclusive windows another "
               "thread ran in)", per_run(runs, world))


def updates_rows(runs):
    for label, key in (("apply latency `add_update` -> applied", "apply_latency_ms"),
                       ("pause (threads held per update)", "pause_ms")):
        yield (f"{label}, median / p99 (ms)",
               [f"{run.get('updates', key, 'median'):.2f} / {run.get('updates', key, 'p99'):.2f}"
                for run in runs])
    for tool in union(run.get("updates", "torn") for run in runs):
        def torn(run, tool=tool):
            if not run.has("updates", "torn", tool):
                return None
            row = run.get("updates", "torn", tool)
            share = row["torn"] / row["calls"] if row["calls"] else 0.0
            return f"{count(row['torn'])} of {count(row['calls'])} ({share:.1%})"
        yield f"torn calls, two functions changed together: {tool}", per_run(runs, torn)


def data_rows(runs):
    sizes = sorted(union(run.get("data", "sizes") for run in runs), key=int)
    labels = distinct(label for run in runs for row in run.get("data", "sizes").values()
                      for label in row)
    for label in labels:
        def rates(run, label=label):
            found = run.get("data", "sizes")
            gc_share = run.get("data", "gc_share") if run.has("data", "gc_share") else {}
            return " / ".join(
                (f"{found[n][label] / 1e6:.2f}" + (f" ({gc_share[n][label]:.0%} GC)"
                                                   if label in gc_share.get(n, {}) else ""))
                if n in found and label in found[n] else NOT_MEASURED for n in sizes)
        yield (f"conversion, {label}, {' / '.join(size(n) for n in sizes)} objects "
               "(M objects/s, share of the time in garbage collection)",
               [rates(run) for run in runs])
    largest = max(union(run.get("data", "lazy") for run in runs), key=int)

    def lazy(run):
        if not run.has("data", "lazy", largest):
            return None
        row = run.get("data", "lazy", largest)
        return f"{num(row['start_ns_per_object'])} / {num(row['first_touch_ns'])}"
    yield (f"lazy conversion of {size(largest)} objects: start / first touch, per object (ns)",
           per_run(runs, lazy))
    labels = distinct(label for run in runs for label in run.get("data", "read_ns"))
    base = next((label for label in labels if label.startswith("never converted")), None)
    if base is None:
        raise FigureError("the runs lack the attribute read of an object never converted")
    for label in labels:
        if label == base:
            continue
        def read(run, label=label):
            if not run.has("data", "read_ns", label):
                return None
            value = run.get("data", "read_ns", label)
            if run.has("data", "read_ratio", label):  # the median of per-round ratios
                ratio = run.get("data", "read_ratio", label)
            else:
                ratio = value / run.get("data", "read_ns", base)
            return f"{ratio:.2f}x ({value:.1f})"
        yield f"attribute read, {label} / {base} (ns)", per_run(runs, read)


def quiescence_rows(runs):
    for threads in union(run.get("quiescence", "by_threads") for run in runs):
        def check(run, threads=threads):
            if not run.has("quiescence", "by_threads", threads):
                return None
            row = run.get("quiescence", "by_threads", threads)
            first = num(row["snapshot_first_us"]) if "snapshot_first_us" in row else "n/a"
            plain = num(row["plain_first_us"]) if "plain_first_us" in row else "n/a"
            return (f"{first} / {num(row['snapshot_us'])} / {num(row['parked_us'])} / {plain} "
                    f"({num(row['frames_alive'])} frames)")
        yield (f"quiescence check, {threads} threads: none named (idle), first / repeated; "
               "all named and parked; first, plain threads (us)",
               per_run(runs, check))

        def bare(run, threads=threads):
            if not run.has("quiescence", "by_threads", threads, "bare_walk_us"):
                return None
            row = run.get("quiescence", "by_threads", threads)
            return f"{row['first_over_bare_walk']:.2f}x ({num(row['bare_walk_us'])} us)"
        yield (f"quiescence check, {threads} threads: first check / a bare walk of the same "
               "stacks (peer)", per_run(runs, bare))


def suspension_rows(runs):
    kinds = union([row["kind"] for row in run.get("suspension", "kinds")] for run in runs)
    for kind in kinds:
        def suspend(run, kind=kind):
            rows = [row for row in run.get("suspension", "kinds") if row["kind"] == kind]
            if not rows:
                return None
            return f"{rows[0]['suspend_ms']['median']:.2f} / {rows[0]['suspend_ms']['max']:.2f}"
        yield (f"`suspend_thread()` -> suspended, {kind}: median / max (ms)",
               per_run(runs, suspend))


def source_tracking_rows(runs):
    yield ("source tracking: import time with / without",
           [f"{run.get('source_tracking', 'ratio_median'):.3f}x "
            f"({run.get('source_tracking', 'modules')} modules)" for run in runs])
    yield ("source tracking: CPU of its background thread afterwards (ms)",
           [num(run.get('source_tracking', 'background_cpu_ms')) for run in runs])
    yield ("source tracking: memory, source / held compressed (MB)",
           [f"{run.get('source_tracking', 'source_mb'):.2f} / "
            f"{run.get('source_tracking', 'stored_mb_compressed'):.2f}" for run in runs])


def capped(cell):
    """``*`` for a tool stopped by the benchmark's time budget (fewer runs than planned)."""
    return "*" if cell.get("capped") else ""


def times(ratio):
    return num(ratio, 1 if ratio < 10 else 0) + "x"


def module_update_rows(runs):
    by_size = [run.get("module_update", "apply", "by_size") for run in runs]
    sizes = sorted(union(by_size), key=int)
    tools = distinct(label for rows in by_size for row in rows.values()
                     for label, cell in row.items()
                     if isinstance(cell, dict) and "median_ms" in cell)
    for n in sizes:
        def cells(run, n=n):
            if not run.has("module_update", "apply", "by_size", n):
                return None
            row = run.get("module_update", "apply", "by_size", n)
            return " / ".join(ms(row[tool]["median_ms"]) + capped(row[tool])
                              if tool in row else "-" for tool in tools)
        yield (f"module update, {size(n)} definitions (ms): {' / '.join(tools)}",
               per_run(runs, cells))
    largest = sizes[-1]
    peers = [tool for tool in tools if not tool.startswith("Pymoult")]

    def ratios(run):
        if not run.has("module_update", "apply", "by_size", largest):
            return None
        row = run.get("module_update", "apply", "by_size", largest)
        return " / ".join(times(row[tool]["ratio_to_pymoult"]) + capped(row[tool])
                          if tool in row else "-" for tool in peers)
    yield (f"module update, {size(largest)} definitions: time of {' / '.join(peers)}, "
           "each over Pymoult's", per_run(runs, ratios))

    def target(run):
        if not run.has("module_update", "apply", "by_size", largest, "Pymoult"):
            return None
        steady = run.get("module_update", "apply", "by_size", largest, "Pymoult", "median_ms")
        return f"{ms(steady)} / {ms(run.get('module_update', 'target_ms'))}"
    yield (f"module update, {size(largest)} definitions: Pymoult / the benchmark's target (ms)",
           per_run(runs, target))

    def memory(run):
        if not run.has("module_update", "apply", "by_size", largest, "source_memory"):
            return None
        held = run.get("module_update", "apply", "by_size", largest, "source_memory")
        return f"{held['parsed_mb']:.1f} / {held['recorded_mb']:.1f}"
    yield (f"module update: source version held at {size(largest)} definitions, parsed / "
           "recorded (MB)", per_run(runs, memory))
    shapes = union(run.get("module_update", "torn") for run in runs)
    for tool in distinct(tool for run in runs for rows in run.get("module_update", "torn").values()
                         for tool in rows):
        def torn(run, tool=tool):
            found = run.get("module_update", "torn")
            return " / ".join(f"{count(found[shape][tool]['torn'])} of "
                              f"{count(found[shape][tool]['calls'])}"
                              if shape in found and tool in found[shape] else NOT_MEASURED
                              for shape in shapes)
        yield (f"module update torn calls, {' / '.join(f'`{shape}`' for shape in shapes)}: "
               f"{tool}",
               [torn(run) for run in runs])


# -- the under-load table ------------------------------------------------------------------------

def under_load_rows(runs):
    def settings(run):
        s = run.get("under_load", "settings")
        return (f"{s['clients']} x {s['rate_per_client']:g} req/s, {s['duration_s']:g} s, "
                f"{s['updates']} updates")
    yield "load: clients x rate, duration, updates", [settings(run) for run in runs]
    kinds = union(run.get("under_load", "updates", "by_kind") for run in runs)
    yield (f"updates planned: {' / '.join(kinds)}",
           [" / ".join(str(run.get("under_load", "updates", "by_kind").get(kind, NOT_MEASURED))
                       for kind in kinds) for run in runs])

    def requests(run):
        req = run.get("under_load", "requests")
        return f"{num(req['served'])} / {req['failed']} / {req['connection_errors']}"
    yield "requests served / failed / connection errors", [requests(run) for run in runs]

    def updates(run):
        upd = run.get("under_load", "updates")
        return f"{upd['applied']} / {upd['rolled_back']} / {upd['unexpected']}"
    yield ("updates applied / rolled back (as planned) / unexpected",
           [updates(run) for run in runs])
    def server(run):
        row = run.get("under_load", "server")
        return (f"{num(row['requests'])} / {row['connections']} (expected "
                f"{num(row['expected_requests'])} / {row['expected_connections']})")
    yield "requests / connections the server counted", [server(run) for run in runs]
    for label, key in (("outside updates", "outside_updates"),
                       ("sent during an update", "sent_during_updates"),
                       ("in flight during an update", "in_flight_during_updates")):
        def latency(run, key=key):
            row = run.get("under_load", "latency", key)
            if "median_ms" not in row:
                return None
            return f"{row['median_ms']:.2f} / {row['p99_ms']:.1f} / {row['max_ms']:.1f}"
        yield f"latency {label}, median / p99 / max (ms)", per_run(runs, latency)
    for label, key in (("update pushed -> reply", "push_round_trip_ms"),
                       ("update queued -> applied", "queued_to_applied_ms"),
                       ("new requests held per update", "requests_held_ms")):
        def spread(run, key=key):
            row = run.get("under_load", "updates", "apply", "all", key)
            if not row:
                return None
            return f"{row['median']:.1f} / {row['max']:.1f}"
        yield f"{label}, median / max (ms)", per_run(runs, spread)
    kinds = union(run.get("under_load", "updates", "apply", "by_kind") for run in runs)
    for kind in kinds:
        def pause(run, kind=kind):
            if not run.has("under_load", "updates", "apply", "by_kind", kind, "pause_ms"):
                return None
            row = run.get("under_load", "updates", "apply", "by_kind", kind, "pause_ms")
            return f"{row['median']:.1f} / {row['max']:.1f}" if row else None
        yield f"pause, {kind} updates, median / max (ms)", per_run(runs, pause)

    def stalls(run):
        row = run.get("under_load", "requests", "load_generator_stalls")
        return f"{row['count']}" + (f" (longest {num(row['longest_ms'])} ms)"
                                    if row["count"] else "")
    yield "load generator stalls (the machine did not run it)", [stalls(run) for run in runs]


# -- the Dask table ------------------------------------------------------------------------------

#: The ways ``bench_dask.py`` makes its change, in the order of its table.
DASK_PEERS = ("pymoult", "upload_file", "restart")


def dask_runs(runs):
    """The runs that include the Dask benchmark (optional: a run without it, or that skipped it
    for want of ``distributed``, has no column); a run where it failed is an error, as for the
    others."""
    return [run for run in runs
            if run.top("benchmarks").get("dask", {}).get("status", "skipped") != "skipped"
            and run.outcome("dask")]


def dask_rows(runs):
    def settings(run):
        return (f"distributed {run.get('dask', 'distributed')}, medians of "
                f"{run.get('dask', 'repeats')} repeats, {ms(run.get('dask', 'seconds'))} s")
    yield "distributed version, repeats, run time", [settings(run) for run in runs]
    sizes = sorted(union(run.get("dask", "by_workers") for run in runs), key=int)
    peers = " / ".join(DASK_PEERS)

    def peer_cells(n, show):
        def cell(run):
            if not run.has("dask", "by_workers", n):
                return None
            row = run.get("dask", "by_workers", n)
            return " / ".join(show(row[peer]) if peer in row and "wall_s" in row[peer]
                              else "failed" for peer in DASK_PEERS)
        return cell

    def skew(f):
        return ms(f["skew_ms"]) if f.get("skew_ms") is not None else "-"

    for n in sizes:
        what = f"{n} workers"
        yield (f"{what}: wall time of the change, {peers} (s)",
               per_run(runs, peer_cells(n, lambda f: num(f["wall_s"], 2))))
        yield (f"{what}: switch skew, first to last process, {peers} (ms)",
               per_run(runs, peer_cells(n, skew)))
        yield (f"{what}: tasks of the stream failed, of those run: {peers}",
               per_run(runs, peer_cells(n, lambda f: f"{f['failed']:.0f} of {f['tasks']:.0f}")))
        yield (f"{what}: tasks submitted after the change that ran the old code: {peers}",
               per_run(runs, peer_cells(n, lambda f: f"{f['stale']:.0f}")))
        yield (f"{what}: data kept in memory (not recomputed): {peers}",
               per_run(runs, peer_cells(n, lambda f: "kept" if f["data_kept"] else "lost")))
        yield (f"{what}: objects in memory running the new code: {peers}",
               per_run(runs, peer_cells(
                   n, lambda f: f"{f['objects_new']:.0f} of {f['objects']:.0f}")))

        def pymoult(run, n=n):
            if not run.has("dask", "by_workers", n, "pymoult", "apply_ms"):
                return None
            f = run.get("dask", "by_workers", n, "pymoult")
            return f"{ms(f['apply_ms'])} / {num(f['undo_s'] * 1e3)}"
        yield (f"{what}: Pymoult's apply on a worker, median / its undo on the cluster (ms)",
               per_run(runs, pymoult))


def dask_block(runs):
    found = dask_runs(runs)
    if not found:
        return ("No recorded run includes the Dask benchmark (`bench_dask.py`: it needs "
                "`pip install -e \".[dask]\"`).")
    lines = table(found, "Dask cluster", (dask_rows,))
    lines += ["", f"(From the runs of {', '.join(run.column for run in found)} listed above.)"]
    return "\n".join(lines)


# -- the fleet table -----------------------------------------------------------------------------

def fleet_rows(runs):
    def settings(run):
        return (f"{run.get('fleet', 'repeats')} rollouts per way, interleaved, "
                f"{ms(run.get('fleet', 'seconds'))} s")
    yield "repeats, run time", [settings(run) for run in runs]
    modes = distinct(mode for run in runs for mode in run.get("fleet", "modes"))
    counts = sorted(union(run.get("fleet", "by_processes") for run in runs), key=int)
    for n in counts:
        for label, key in (("switch skew, first to last process", "skew_ms"),
                           ("rollout wall time", "wall_ms")):
            def cell(run, n=n, key=key):
                if not run.has("fleet", "by_processes", n):
                    return None
                row = run.get("fleet", "by_processes", n)
                return " / ".join(f"{ms(row[mode][key]['median'])} ({ms(row[mode][key]['max'])})"
                                  if mode in row else NOT_MEASURED for mode in modes)
            yield (f"{n} processes: {label}, {' / '.join(modes)}, median (max) (ms)",
                   per_run(runs, cell))

        def reported(run, n=n):
            if not run.has("fleet", "by_processes", n, "two-phase", "reported_skew_ms"):
                return None
            value = run.get("fleet", "by_processes", n, "two-phase", "reported_skew_ms")
            return None if value is None else ms(value)
        yield (f"{n} processes: two-phase skew as the rollout reports it, median (ms)",
               per_run(runs, reported))


def fleet_block(runs):
    lines = table(runs, "fleet of `pymoult run` processes", (fleet_rows,))
    lines += ["", f"(From the runs of {', '.join(run.column for run in runs)} listed above.)"]
    return "\n".join(lines)


# -- the tables and where they go ----------------------------------------------------------------

def provenance(run):
    """Where and when a column was recorded, from its JSON."""
    load_before, load_after = run.top("load_average_before"), run.top("load_average_after")
    peers = ", ".join(f"{name} {version or 'not installed'}"
                      for name, version in sorted(run.top("peers").items()))
    try:
        started = datetime.datetime.fromisoformat(run.top("started_utc"))
    except (TypeError, ValueError):
        raise FigureError(f"{run.name}: 'started_utc' is {run.top('started_utc')!r}, not a "
                          "date") from None
    line = (f"- {run.column}: CPython {run.version}, {started:%Y-%m-%d %H:%M} UTC, "
            f"{run.top('platform')}, {run.top('cpus')} CPUs, load average "
            f"{load_before[0]:.2f} before / {load_after[0]:.2f} after, {peers}, "
            f"commit {run.top('commit') or 'unknown'}")
    if run.top("quick"):
        line += "; `--quick`: a smoke run, its figures are not comparable"
    return line + f" (`{run.name}`)"


def table(runs, title, row_families):
    lines = [f"| {title} | " + " | ".join(run.column for run in runs) + " |",
             "| --- |" + " --- |" * len(runs)]
    for family in row_families:
        for label, cells in family(runs):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in [label, *cells])
                         + " |")
    return lines


def summary_block(runs):
    lines = ["Recorded runs (one column each):", ""]
    lines += [provenance(run) for run in runs]
    lines += [""] + table(runs, "figure", (run_rows, core_rows, updates_rows, data_rows,
                                           quiescence_rows, suspension_rows,
                                           source_tracking_rows, module_update_rows))
    return "\n".join(lines)


def under_load_block(runs):
    lines = table(runs, "under load", (under_load_rows,))
    lines += ["", f"(From the runs of {', '.join(run.column for run in runs)} listed above.)"]
    return "\n".join(lines)


#: marker name -> the function writing its block from the runs
TABLES = {"summary": summary_block, "under-load": under_load_block, "dask": dask_block,
          "fleet": fleet_block}


def replace_between(text, name, block):
    """``text`` with what lies between ``name``'s markers replaced by ``block``."""
    opening, closing = f"<!-- figures:{name} -->", f"<!-- /figures:{name} -->"
    for marker in (opening, closing):
        found = text.count(marker)
        if found != 1:
            raise FigureError(f"the file has {found} {marker} markers, where there must be one")
    start, end = text.index(opening) + len(opening), text.index(closing)
    if end < start:
        raise FigureError(f"the file's {closing} comes before its {opening}")
    return text[:start] + "\n" + block + "\n" + text[end:]


def rewrite(text, runs):
    """The Markdown ``text`` with every table of ``TABLES`` written from ``runs``."""
    for name, block in TABLES.items():
        try:
            text = replace_between(text, name, block(runs))
        except (KeyError, TypeError, IndexError) as exc:
            raise FigureError(f"a run has {name!r} figures not in the expected form "
                              f"({type(exc).__name__}: {exc})") from None
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the benchmark tables from run_all.py's "
                                                 "JSON files, one per version")
    parser.add_argument("results", nargs="+", help="combined JSON of one run_all.py run")
    parser.add_argument("--target", "--readme", dest="target", default=str(TARGET),
                        help="the Markdown file whose tables are rewritten (--readme: its "
                             "former name); default: %(default)s")
    args = parser.parse_args(argv)
    target = pathlib.Path(args.target)
    try:
        text = target.read_text()
        new = rewrite(text, load_runs(args.results))
    except FigureError as exc:
        print(f"readme_figures: {exc}; {target} left as it was", file=sys.stderr)
        return 1
    if new == text:
        print(f"{target}: already up to date")
    else:
        target.write_text(new)
        print(f"{target}: tables rewritten from {', '.join(args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
