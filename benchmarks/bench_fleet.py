"""Fleet benchmark: how close together 2, 4 and 8 ``pymoult run`` processes switch versions.

    python benchmarks/bench_fleet.py [--quick] [--repeats N] [--json PATH]

N copies of a small application run under ``pymoult run``, each listening on its default
address, each looping (a call of ``greet``, an update point, a 5 ms sleep). One update script
redefines ``greet`` (alternately to version 2 and back to version 1, a new update each time) and
records, inside the update's apply window, when the process switched (``time.time()``, written
to a file per process). The same update goes to the N processes with ``pymoult.rollout.rollout``
in three ways, interleaved repeat by repeat (their order turning at each repeat, after one
rollout not counted):

- **two-phase**: every process prepared (its update alterable, its threads held), then all
  committed at once (``two_phase=True``: ``pymoult push --two-phase``);
- **one wave**: the script pushed to every process at once, each applying it as soon as it can
  (``canary=0, wave=N``);
- **canary, waves of 1**: one process, then the others one at a time (the default of ``pymoult
  push`` to several addresses).

Figures, medians (and maximum) over the repeats: the switch skew, the time between the first
and the last process's switch (the processes' clocks are this machine's), and the rollout's wall
time as the caller sees it. For the two-phase rollout, the skew the rollout itself reports (from
its commit replies) is given too.
"""

import os
import pathlib
import queue
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import RESULTS, write_json  # noqa: E402

from pymoult.cli import LISTENING  # noqa: E402
from pymoult.rollout import NEW, rollout  # noqa: E402

SIZES = (2, 4, 8)
WAIT = 60.0
MODES = ("two-phase", "one wave", "canary, waves of 1")

APP = """\
import time
from pymoult.lowlevel.alterability import staticUpdatePoint


def greet(n):
    return "v1"


n = 0
while True:
    n += 1
    greet(n)
    staticUpdatePoint()
    time.sleep(0.005)
"""

UPDATE = """\
import os
import sys
import time
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.relinking import redefineFunction

app = sys.modules["__main__"]


def greet(n):
    return {version!r}


class Greet(Update):
    def apply(self):
        redefineFunction(app, "greet", greet)
        switched = time.time()
        with open(os.path.join({directory!r}, f"{{os.getpid()}}-{name}"), "w") as out:
            out.write(repr(switched))


fetch_manager("runtime").add_update(Greet({name!r}, threads=[get_runner()], timeout=10))
"""


def start(path, env):
    """``pymoult run path``: ``(process, address)`` once it listens (its stderr read on by a
    thread, so that it never blocks on a full pipe)."""
    process = subprocess.Popen([sys.executable, "-m", "pymoult", "run", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    lines = queue.Queue()

    def read():
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + WAIT
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            process.wait(WAIT)
            raise RuntimeError(f"pymoult run {path} did not announce its listener")
        if line.startswith(LISTENING):
            return process, line[len(LISTENING):].strip()


def one_rollout(addresses, mode, directory, name, version):
    script = UPDATE.format(version=version, directory=str(directory), name=name)
    started = time.monotonic()
    if mode == "two-phase":
        report = rollout(addresses, script, two_phase=True, timeout=WAIT)
    elif mode == "one wave":
        report = rollout(addresses, script, canary=0, wave=len(addresses), timeout=WAIT)
    else:
        report = rollout(addresses, script, canary=1, wave=1, timeout=WAIT)
    wall = time.monotonic() - started
    if report.version != NEW:
        raise RuntimeError(f"{mode}: {report.summary}")
    switched = [float(path.read_text()) for path in directory.glob(f"*-{name}")]
    if len(switched) != len(addresses):
        raise RuntimeError(f"{mode}: {len(switched)} of {len(addresses)} processes recorded "
                           "their switch")
    return {"wall_ms": wall * 1e3, "skew_ms": (max(switched) - min(switched)) * 1e3,
            "reported_skew_ms": None if report.skew is None else report.skew * 1e3}


def bench(count, repeats, work):
    env = dict(os.environ)
    project = str(pathlib.Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
    env.pop("PYMOULT_ADDRESS", None)
    app = work / "fleet_app.py"
    app.write_text(textwrap.dedent(APP))
    switches = work / f"switches-{count}"
    switches.mkdir()
    processes = []
    try:
        for _ in range(count):
            processes.append(start(app, env))
        addresses = [address for _, address in processes]
        runs = {mode: [] for mode in MODES}
        # a first rollout, not counted: the processes' first push imports what pushes need
        one_rollout(addresses, "one wave", switches, f"greet-{count}-0", "v2")
        number = 0
        for repeat in range(repeats):
            # interleaved, the order turning at each repeat: each way sees the machine as the
            # others do, and none is always first
            for mode in MODES[repeat % len(MODES):] + MODES[:repeat % len(MODES)]:
                number += 1
                version = "v1" if number % 2 else "v2"
                runs[mode].append(one_rollout(addresses, mode, switches,
                                              f"greet-{count}-{number}", version))
    finally:
        for process, _ in processes:
            process.kill()
            process.wait(WAIT)
    row = {"processes": count}
    for mode, found in runs.items():
        skews = [run["skew_ms"] for run in found]
        walls = [run["wall_ms"] for run in found]
        reported = [run["reported_skew_ms"] for run in found
                    if run["reported_skew_ms"] is not None]
        row[mode] = {"skew_ms": {"median": statistics.median(skews), "max": max(skews)},
                     "wall_ms": {"median": statistics.median(walls), "max": max(walls)},
                     "reported_skew_ms": statistics.median(reported) if reported else None,
                     "runs": found}
    return row


def show(rows, repeats, seconds):
    print(f"\nPymoult fleet benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"medians (max) of {repeats} rollouts per mode, interleaved; run time {seconds:.0f} s")
    print(f"  {'processes':>9}  {'mode':<20} {'skew ms':>18} {'wall ms':>18} "
          f"{'reported skew ms':>17}")
    for row in rows:
        for mode in MODES:
            f = row[mode]
            skew = f"{f['skew_ms']['median']:.2f} ({f['skew_ms']['max']:.2f})"
            wall = f"{f['wall_ms']['median']:.1f} ({f['wall_ms']['max']:.1f})"
            reported = "-" if f["reported_skew_ms"] is None else f"{f['reported_skew_ms']:.2f}"
            print(f"  {row['processes']:>9}  {mode:<20} {skew:>18} {wall:>18} {reported:>17}")


def main():
    import argparse

    parser = argparse.ArgumentParser(description="Pymoult fleet rollout skew benchmark")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 2 and 4 processes")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", default=str(RESULTS / "fleet.json"))
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    sizes = SIZES[:2] if args.quick else SIZES
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pymoult-bench-fleet-") as work:
        for count in sizes:
            rows.append(bench(count, repeats, pathlib.Path(work)))
            print(f"  {count} processes: done", flush=True)
    seconds = time.monotonic() - started
    show(rows, repeats, seconds)
    write_json({"by_processes": {str(r["processes"]): r for r in rows}, "repeats": repeats,
                "modes": list(MODES), "seconds": seconds,
                "load_average": (load_before, os.getloadavg()[0])}, args.json)


if __name__ == "__main__":
    main()
