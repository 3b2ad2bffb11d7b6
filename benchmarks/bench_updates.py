"""Update benchmark: how fast an update lands, how long threads are held, and torn calls.

    python benchmarks/bench_updates.py [--quick] [--json PATH]

- apply latency: ``add_update`` to the update applied, with a ThreadedManager and two DSU threads
  that reach update points continuously (every few microseconds), median and p99;
- pause: how long the threads were held for each update (median, p99);
- torn calls: a DSU thread calls ``decode(encode(x))`` between its update points while updates
  change both functions together. A call is torn when it used one function's old version and
  the other's new one (the round trip then fails). Side by side in the same run:
  Pymoult (threads parked, apply in a stop-the-world window); jurigged (the module's file
  rewritten and its CodeFile refreshed, as its watcher does; skipped if jurigged is not
  installed: ``pip install -e .[bench]``); ``importlib.reload`` of the module; and bare
  in-place code swaps, one function after the other, with no coordination.
"""

import importlib
import importlib.util
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import parse_args, percentile, write_json  # noqa: E402

from pymoult.highlevel.managers import ThreadedManager  # noqa: E402
from pymoult.highlevel.updates import Update  # noqa: E402
from pymoult.lowlevel.alterability import staticUpdatePoint  # noqa: E402
from pymoult.lowlevel.relinking import redefineFunction  # noqa: E402
from pymoult.threads import DSU_Thread  # noqa: E402

CODECS = [
    "def encode(x):\n    return x + {k}\ndef decode(y):\n    return y - {k}\n",
    "def encode(x):\n    return x * 3 + {k}\ndef decode(y):\n    return (y - {k}) // 3\n",
]


def codec(version):
    module = types.ModuleType(f"codec_{version}")
    exec(CODECS[version % 2].format(k=version + 1), module.__dict__)
    return module


class CodecUpdate(Update):
    def __init__(self, app, new, threads):
        super().__init__(name="codec", threads=threads, max_tries=1000, sleep_time=0.01)
        self.app, self.new = app, new

    def apply(self):
        redefineFunction(self.app, "encode", self.new.encode)
        redefineFunction(self.app, "decode", self.new.decode)


def start_callers(app, count, stop):
    counters = [[0, 0] for _ in range(count)]  # calls, torn
    started = threading.Barrier(count + 1, timeout=10)

    def worker(slot):
        started.wait()
        x = 0
        while not stop.is_set():
            x += 1
            if app.decode(app.encode(x)) != x:
                slot[1] += 1
            slot[0] += 1
            staticUpdatePoint()

    threads = [DSU_Thread(target=worker, args=(slot,), daemon=True) for slot in counters]
    for thread in threads:
        thread.start()
    started.wait()
    return threads, counters


def bench_pymoult(updates):
    app = codec(0)
    stop = threading.Event()
    threads, counters = start_callers(app, 2, stop)
    manager = ThreadedManager("bench").start()
    latencies, pauses = [], []
    for version in range(1, updates + 1):
        update = CodecUpdate(app, codec(version), threads)
        start = time.perf_counter()
        manager.apply_update(update, timeout=10)
        latencies.append(update.times["applied"] - update.times["added"])
        pauses.append(update.pause)
        del start
    stop.set()
    manager.stop(10)
    for thread in threads:
        thread.join(10)
    return latencies, pauses, sum(c[0] for c in counters), sum(c[1] for c in counters)


def bench_uncoordinated(updates):
    """In-place swaps of both functions, one after the other, with the caller running."""
    app = codec(0)

    def apply_version(version):
        new = codec(version)
        app.encode.__code__ = new.encode.__code__
        time.sleep(0)  # the gap a reload tool leaves between two definitions: a GIL hand-off
        app.decode.__code__ = new.decode.__code__

    return _torn_while(app, apply_version, updates)


class _ModuleFile:
    """A codec module imported from a real file (what jurigged and reload work on)."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix="pymoult-bench-")
        self.path = os.path.join(self.dir, f"{name}.py")
        self.write(0)
        sys.path.insert(0, self.dir)  # reload finds the module again through sys.path
        spec = importlib.util.spec_from_file_location(name, self.path)
        self.module = importlib.util.module_from_spec(spec)
        sys.modules[name] = self.module
        spec.loader.exec_module(self.module)

    def write(self, version):
        with open(self.path, "w") as out:
            out.write(CODECS[version % 2].format(k=version + 1))
        # reload compares mtimes in whole seconds on some file systems: force a fresh one
        os.utime(self.path, ns=(version * 10**9 + 10**18, version * 10**9 + 10**18))

    def close(self):
        sys.modules.pop(self.module.__name__, None)
        sys.path.remove(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def _torn_while(app, apply_version, updates):
    """Calls and torn calls of one caller thread while ``apply_version(v)`` runs for each v."""
    stop = threading.Event()
    threads, counters = start_callers(app, 1, stop)
    for version in range(1, updates + 1):
        apply_version(version)
        time.sleep(0.001)
    stop.set()
    for thread in threads:
        thread.join(10)
    return sum(c[0] for c in counters), sum(c[1] for c in counters)


def bench_jurigged(updates):
    try:
        from jurigged.register import registry
    except ImportError:
        return None
    source = _ModuleFile("bench_codec_jurigged")
    try:
        registry.prepare(source.module.__name__, source.path)
        codefile = registry.get(source.path)

        def apply_version(version):
            source.write(version)
            codefile.refresh()

        return _torn_while(source.module, apply_version, updates)
    finally:
        source.close()


def bench_reload(updates):
    source = _ModuleFile("bench_codec_reload")
    try:
        def apply_version(version):
            source.write(version)
            importlib.reload(source.module)

        return _torn_while(source.module, apply_version, updates)
    finally:
        source.close()


def main():
    args = parse_args("Pymoult update benchmark", "updates.json", "fewer updates")
    updates = 50 if args.quick else 300

    latencies, pauses, calls, torn = bench_pymoult(updates)
    peers = {"jurigged (CodeFile.refresh)": bench_jurigged(updates),
             "importlib.reload": bench_reload(updates),
             "uncoordinated in-place swaps": bench_uncoordinated(updates)}
    ms = 1e3
    results = {
        "updates": updates,
        "apply_latency_ms": {"median": statistics.median(latencies) * ms,
                             "p99": percentile(latencies, 0.99) * ms},
        "pause_ms": {"median": statistics.median(pauses) * ms,
                     "p99": percentile(pauses, 0.99) * ms},
        "torn": {"pymoult": {"calls": calls, "torn": torn}},
    }
    for label, outcome in peers.items():
        if outcome is None:
            print(f"  ({label} not installed: skipped)")
        else:
            results["torn"][label] = {"calls": outcome[0], "torn": outcome[1]}
    print(f"Pymoult update benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{updates} updates")
    print(f"  add_update -> applied: median {results['apply_latency_ms']['median']:.3f} ms, "
          f"p99 {results['apply_latency_ms']['p99']:.3f} ms (target <= 1 ms / <= 5 ms)")
    print(f"  threads held per update: median {results['pause_ms']['median']:.3f} ms, "
          f"p99 {results['pause_ms']['p99']:.3f} ms")
    print("  torn decode(encode(x)) calls while both functions change together:")
    for label, row in results["torn"].items():
        print(f"    {label:32} {row['torn']:6} torn of {row['calls']:>10,} calls, "
              f"{row['torn'] / updates:6.2f} per update")
    write_json(results, args.json)


if __name__ == "__main__":
    main()
