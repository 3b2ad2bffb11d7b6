"""Run every benchmark, print one summary table, and write one combined JSON.

    python benchmarks/run_all.py [--quick] [--json PATH] [--only NAME ...] [--skip NAME ...]

Each benchmark runs as a subprocess of the same Python (its own output shown as it goes), writing
its JSON to a temporary file; ``--quick`` is passed through. A benchmark whose file is missing, or
that needs a package not installed (``NEEDS``: the Dask one), is skipped with a note, as is one
named by ``--skip``; one that fails is reported and the others still run. The combined JSON
(default benchmarks/results/all-<major.minor>.json, so that one run per Python version can be
kept side by side) holds each benchmark's results, status and duration, the Python version, the
date, the machine and its load average before and after (the figures are only as quiet as the
machine), the peers' versions, the commit, and the summary rows. ``readme_figures.py`` writes
the tables of ``docs/benchmarks.md`` from these files. Exit code 1 if a benchmark failed.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import RESULTS, write_json  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent

#: name -> script, in the order they run (the under-load one last: it is the integration proof)
BENCHMARKS = {
    "core": "bench_core.py",
    "data": "bench_data.py",
    "updates": "bench_updates.py",
    "quiescence": "bench_quiescence.py",
    "suspension": "bench_suspension.py",
    "source_tracking": "bench_source_tracking.py",
    "module_update": "bench_module_update.py",
    "dask": "bench_dask.py",
    "fleet": "bench_fleet.py",
    "under_load": "bench_under_load.py",
}
#: name -> the distribution a benchmark needs beyond the test and bench extras: without it,
#: the benchmark is skipped with a note (its table then says it was not recorded)
NEEDS = {"dask": "distributed"}
TIMEOUT = 1800  # seconds per benchmark before it is stopped and reported failed
#: the tools the benchmarks compare Pymoult with (distribution names), recorded with their versions
PEERS = ("jurigged", "ipython")


def default_json():
    return RESULTS / f"all-{sys.version_info.major}.{sys.version_info.minor}.json"


def installed(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def commit():
    """The checkout's commit, with ``+changes`` if it has uncommitted changes (None outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=HERE, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def run_one(name, script, quick, workdir):
    path = HERE / script
    if not path.exists():
        return {"status": "skipped", "why": f"{script} not found"}
    if name in NEEDS and installed(NEEDS[name]) is None:
        return {"status": "skipped", "why": f"needs {NEEDS[name]}, not installed"}
    out = pathlib.Path(workdir) / f"{name}.json"
    command = [sys.executable, str(path), "--json", str(out)] + (["--quick"] if quick else [])
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    start = time.monotonic()
    try:
        done = subprocess.run(command, timeout=TIMEOUT, check=False)
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = None
    seconds = time.monotonic() - start
    if code != 0 or not out.exists():
        why = f"timed out after {TIMEOUT} s" if code is None else f"exit code {code}"
        return {"status": "failed", "why": why, "seconds": seconds}
    return {"status": "ok", "seconds": seconds, "results": json.loads(out.read_text())}


# -- the summary: the figures issue 7 asks for, taken from each benchmark's JSON ---------------

def _ms(row):
    return f"{row['median']:.2f} / {row['p99']:.2f} ms"


def core_rows(r):
    idle, wake, world = r["idle_point"], r["park_and_wake"], r["stop_the_world"]
    net = idle["net_ns"]
    yield ("idle staticUpdatePoint() / empty call (net)",
           f"{idle['ratio_point_vs_empty_call']:.2f}x")
    yield ("idle update_point() / empty call (net)",
           f"{idle['ratio_zero_arg_point_vs_empty_call']:.2f}x")
    yield ("loop with staticUpdatePoint() / loop with no point",
           f"{idle['ratio_point_vs_no_point']:.2f}x")
    yield ("idle staticUpdatePoint() net cost",
           f"{net['staticUpdatePoint()']:.1f} ns (empty call {net['empty function call']:.1f} ns)")
    yield ("original Pymoult point / ours (net)",
           f"{idle['ratio_original_pymoult_vs_point']:.1f}x")
    yield ("suspend() -> parked, median / p99",
           f"{wake['park_us']['median']:.0f} / {wake['park_us']['p99']:.0f} us")
    yield ("resume latency: resume() -> running, median / p99",
           f"{wake['wake_us']['median']:.0f} / {wake['wake_us']['p99']:.0f} us")
    for label, row in world.items():
        yield (f"stop-the-world entry, {label}, median",
               f"{row['entry_ms_median']:.2f} ms (exclusive windows in which another thread "
               f"ran: {row['interleaved_exclusive_windows']})")


def updates_rows(r):
    yield "apply latency add_update -> applied, median / p99", _ms(r["apply_latency_ms"])
    yield "pause (threads held per update), median / p99", _ms(r["pause_ms"])
    for label, row in r["torn"].items():
        share = row["torn"] / row["calls"] if row["calls"] else 0.0
        yield (f"torn calls, {label}",
               f"{row['torn']:,} of {row['calls']:,} ({share:.2%}; "
               f"{row['torn'] / r['updates']:.1f} per update)")


def data_rows(r):
    for count, row in r["sizes"].items():
        for label, rate in row.items():
            yield f"eager conversion, {int(count):,} objects, {label}", f"{rate / 1e6:.2f} M/s"
    for count, row in r["lazy"].items():
        yield (f"lazy conversion, {int(count):,} objects: start / first touch, per object",
               f"{row['start_ns_per_object']:.0f} / {row['first_touch_ns']:.0f} ns")
    reads, ratios = r["read_ns"], r["read_ratio"]
    peer = next(label for label in reads if label.startswith("never converted"))
    for label, value in reads.items():
        if label != peer:  # the median of the per-round ratios, as bench_data prints it
            yield (f"attribute read, {label} / never converted",
                   f"{ratios[label]:.2f}x ({value:.1f} ns)")


def quiescence_rows(r):
    for count, row in r["by_threads"].items():
        yield (f"quiescence check, {count} threads ({row['frames_alive']:,} frames): "
               "snapshot first / repeated / threads named and parked / first, plain threads",
               f"{row['snapshot_first_us']:.0f} / {row['snapshot_us']:.0f} / "
               f"{row['parked_us']:.0f} / {row['plain_first_us']:.0f} us")
        yield (f"quiescence check, {count} threads: first check / bare walk (peer)",
               f"{row['first_over_bare_walk']:.2f}x ({row['bare_walk_us']:.0f} us)")


def suspension_rows(r):
    for row in r["kinds"]:
        s = row["suspend_ms"]
        yield f"suspend -> suspended: {row['kind']}", f"{s['median']:.2f} / {s['max']:.2f} ms"


def source_tracking_rows(r):
    yield (f"source tracking: import of {', '.join(r['packages'])} ({r['modules']} modules), "
           "on / off", f"{r['ratio_median']:.3f}x")
    yield ("source tracking: memory, source / held compressed",
           f"{r['source_mb']:.2f} / {r['stored_mb_compressed']:.2f} MB")


def module_update_rows(r):
    peers = ", ".join(f"{name} {version}" for name, version in r.get("peers", {}).items())
    if peers:
        yield "module update: peers installed", peers
    for n, row in r["apply"]["by_size"].items():
        cells = [f"{label} {cell['median_ms']:.1f}" for label, cell in row.items()
                 if isinstance(cell, dict) and "median_ms" in cell]
        yield (f"module update, one-line change, {int(n):,} definitions, median ms",
               ", ".join(cells))
    for n, row in r["apply"]["by_size"].items():
        if "source_memory" in row:
            memory = row["source_memory"]
            yield (f"module update: source version held, {int(n):,} definitions, "
                   "parsed / recorded", f"{memory['parsed_mb']:.1f} / "
                                        f"{memory['recorded_mb']:.1f} MB")
    for shape, rows in r.get("torn", {}).items():
        for label, row in rows.items():
            yield (f"module update torn calls, {shape}, {label}",
                   f"{row['torn']:,} of {row['calls']:,}")


def under_load_rows(r):
    req, upd, lat, settings = r["requests"], r["updates"], r["latency"], r["settings"]
    yield ("under load: requests served / failed / connection errors",
           f"{req['served']:,} / {req['failed']} / {req['connection_errors']} "
           f"({settings['clients']} clients, {req['per_second']:.0f} req/s, "
           f"{settings['duration_s']:g} s)")
    yield ("under load: updates applied / rolled back / unexpected",
           f"{upd['applied']} / {upd['rolled_back']} / {upd['unexpected']} of {upd['planned']}")
    for label, key in (("outside updates", "outside_updates"),
                       ("sent during an update", "sent_during_updates"),
                       ("in flight during an update", "in_flight_during_updates")):
        row = lat[key]
        if "median_ms" in row:
            yield (f"under load: latency {label}, median / p99 / max",
                   f"{row['median_ms']:.2f} / {row['p99_ms']:.2f} / {row['max_ms']:.2f} ms "
                   f"({row['requests']:,} requests)")
    apply = upd["apply"]["all"]
    for label, key in (("push round trip", "push_round_trip_ms"),
                       ("queued -> applied", "queued_to_applied_ms"),
                       ("requests held", "requests_held_ms"), ("pause", "pause_ms")):
        if apply.get(key):
            yield (f"under load: update {label}, median / max",
                   f"{apply[key]['median']:.2f} / {apply[key]['max']:.2f} ms")
    stalls = req["load_generator_stalls"]
    yield ("under load: load generator stalls (machine noise)",
           f"{stalls['count']}, longest {stalls['longest_ms']:.0f} ms")


def dask_rows(r):
    for workers, row in r["by_workers"].items():
        for peer in ("pymoult", "upload_file", "restart"):
            f = row[peer]
            if "wall_s" not in f:
                yield f"dask, {workers} workers, {peer}", "every run failed"
                continue
            skew = f"{f['skew_ms']:.1f} ms" if f.get("skew_ms") is not None else "-"
            yield (f"dask, {workers} workers, {peer}: wall / skew / failed / data",
                   f"{f['wall_s']:.2f} s / {skew} / {f['failed']:.0f} of {f['tasks']:.0f} / "
                   f"{'kept' if f['data_kept'] else 'lost'}")


def fleet_rows(r):
    for count, row in r["by_processes"].items():
        for mode in r["modes"]:
            f = row[mode]
            yield (f"fleet, {count} processes, {mode}: skew / wall, median",
                   f"{f['skew_ms']['median']:.2f} / {f['wall_ms']['median']:.1f} ms")


SUMMARIES = {"core": core_rows, "data": data_rows, "updates": updates_rows,
             "quiescence": quiescence_rows, "suspension": suspension_rows,
             "source_tracking": source_tracking_rows,
             "module_update": module_update_rows, "dask": dask_rows,
             "fleet": fleet_rows,
             "under_load": under_load_rows}


def summary(outcomes):
    rows = []
    for name, outcome in outcomes.items():
        if outcome["status"] != "ok":  # failed, or skipped
            rows.append([name, f"({outcome['status']}: {outcome['why']})", ""])
            continue
        try:
            rows.extend([name, figure, value] for figure, value in
                        SUMMARIES[name](outcome["results"]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            rows.append([name, f"(results not in the expected form: {exc!r}; see the JSON)", ""])
    return rows


def main():
    parser = argparse.ArgumentParser(description="Run every Pymoult benchmark")
    parser.add_argument("--quick", action="store_true", help="each benchmark's smoke run")
    parser.add_argument("--json", default=str(default_json()),
                        help="where to write the combined JSON (default: %(default)s)")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS),
                        help="run only this benchmark (repeat for several)")
    parser.add_argument("--skip", action="append", choices=list(BENCHMARKS), default=[],
                        help="do not run this benchmark (repeat for several; the Dask one "
                             "takes some minutes)")
    args = parser.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    start = time.monotonic()
    load_before = os.getloadavg()
    outcomes = {}
    with tempfile.TemporaryDirectory(prefix="pymoult-bench-") as workdir:
        for name, script in BENCHMARKS.items():
            if args.only and name not in args.only:
                continue
            if name in args.skip:
                outcomes[name] = {"status": "skipped", "why": "--skip"}
                continue
            outcomes[name] = run_one(name, script, args.quick, workdir)
    load_after = os.getloadavg()
    seconds = time.monotonic() - start

    rows = summary(outcomes)
    print(f"\n=== Summary: Python {sys.version.split()[0]}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / "
          f"{load_after[0]:.1f} after{', --quick' if args.quick else ''}")
    width = max((len(figure) for _, figure, _ in rows), default=10)
    for name, outcome in outcomes.items():
        took = f", {outcome['seconds']:.0f} s" if "seconds" in outcome else ""
        print(f"\n{name} ({outcome['status']}{took})")
        for row_name, figure, value in rows:
            if row_name == name:
                print(f"  {figure:{width}}  {value}")

    write_json({"implementation": platform.python_implementation(),
                "started_utc": started.isoformat(timespec="seconds"), "seconds": seconds,
                "platform": platform.platform(), "machine": platform.machine(),
                "cpus": os.cpu_count(), "quick": args.quick, "only": args.only,
                "skip": args.skip,
                "load_average_before": load_before, "load_average_after": load_after,
                "peers": {name: installed(name) for name in PEERS}, "commit": commit(),
                "summary": rows, "benchmarks": outcomes}, args.json)
    print("Tables of docs/benchmarks.md: python benchmarks/readme_figures.py "
          "benchmarks/results/all-*.json")
    failed = [name for name, outcome in outcomes.items() if outcome["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
