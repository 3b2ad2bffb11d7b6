"""Module update benchmark: the time to apply a one-line change against the module's size, next
to hot-reload tools, and torn calls while two functions of a module change together.

    python benchmarks/bench_module_update.py [--quick] [--json PATH]

Apply time. A generated module of N definitions (N = 10, 100, 1,000, 5,000: mostly functions of
2-4 lines, a class with three methods every tenth definition, a constant every 25th), imported
from a real file, gets a one-line change in the body of ``target``, its middle definition (a
constant that differs at every update). The clock runs from "the new source is available" (in
hand for Pymoult; already written to the module's file, with a fresh mtime, for the others) to
"the new code is live". Every update is checked by calling ``target`` through the module: one
that did not take effect is reported as an error and not timed. The tools take turns (one update
each per round), so the machine's noise hits all alike; figures are medians.

- Pymoult: ``ModuleUpdate(module, source=new)`` applied by a ``ThreadedManager``
  (``apply_update``), the module imported with sources tracked, as under ``pymoult run``. The
  first update of a module compares with the source recorded at its import (parsed lazily:
  only around the change); the next ones with the version Pymoult last applied (incremental).
  Both are shown, and the split: construction (compare + trial evaluation), ``apply_update``
  (hand-off to the manager, quiescence check, apply), and the stop-the-world window inside it.
  Also the first update of a module imported without tracking (its file is read, parsed whole
  and checked against the running code).
- jurigged: ``CodeFile.refresh()``, what its watcher runs when the file changes (its
  ``registry.prepare``, made once at import, is not counted).
- IPython autoreload: ``ModuleReloader.check()``, what ``%autoreload`` runs before each cell,
  limited to the benchmark's module (IPython 9 first tries its deduperreload, which patches the
  changed definitions, else falls back to superreload); and ``superreload`` itself (re-executes
  the module, then patches the old functions and classes, finding each class's instances with
  a scan of the whole heap).
- ``importlib.reload`` (re-executes the module).

jurigged's matching is quadratic, so the run is bounded: a tool stops at a size once its updates
there have used a time budget (at least one update; ``*`` in the table), and skips a size where
one update is predicted (its median at the previous size, grown quadratically) to take longer
than a limit. ``--quick``: 5 rounds, 5 s budget, 20 s limit (the quadratic peers then stop
early); else 15 rounds, 20 s, 600 s (jurigged runs once at 5,000 definitions: about 2 minutes).
superreload (and autoreload on IPython 8, which has no deduperreload) is not run above 1,000
definitions: its time is classes x objects in the heap (it scans the heap for each class's
instances), so there it mostly measures this process's heap, for minutes.

Torn calls. Two threads call ``decode(encode(x))`` through the module continuously, on a module
of 100 definitions in which ``encode`` and ``decode`` are 33 definitions apart, while U updates
(50; 20 with ``--quick``; 10 for superreload, whose updates take seconds each with two busy
callers) switch the module between two versions that change both functions together. A call
is torn when it mixed the versions (the round trip fails); a call that raised is counted
apart. Two shapes of caller: ``decode(encode(x))``, and the same with a Python call of the
caller's own in between (a point where the interpreter may switch threads while neither
function runs). Pymoult without threads (it waits until no thread runs a changed function) and
with the two callers as the update's threads (applied while both are at their update points);
then the same peers. This part runs first, while the heap is small.
"""

import gc
import importlib
import importlib.metadata
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import parse_args, percentile, write_json  # noqa: E402

from pymoult.errors import ModuleUpdateError, NotAlterableNow  # noqa: E402
from pymoult.highlevel.managers import ThreadedManager  # noqa: E402
from pymoult.highlevel.updates import ModuleUpdate  # noqa: E402
from pymoult.lowlevel.alterability import staticUpdatePoint  # noqa: E402
from pymoult.lowlevel.source_diff import forget_version, parse_version  # noqa: E402
from pymoult.source_tracking import stop_tracking, track_sources  # noqa: E402
from pymoult.threads import DSU_Thread  # noqa: E402

SIZES = (10, 100, 1000, 5000)
TARGET_MS = 5  # issue 14 (issue 6 asked 100): a one-line change at 5,000 definitions
FIRST_TARGET_MS = 150  # issue 14: the first update at 5,000 definitions, sources tracked
FIRST = "Pymoult (first update)"
UNTRACKED = "Pymoult (first update, untracked)"
WAIT = 60.0

# -- the generated modules ----------------------------------------------------------------------

HEADER = ('"""A generated module of {n} definitions."""\n'
          "import math\n\n"
          "# module state: a reload that re-runs the module resets it\n"
          "counter = 0\n\n\n"
          "def bump():\n    global counter\n    counter += 1\n    return counter\n\n\n")

TARGET = "def target(x):\n    y = x * 2\n    return y + {k}\n"


def definition(i):
    """The ``i``-th definition of a generated module (2-4 line functions, classes, constants)."""
    if i % 25 == 3:
        return f"LIMIT_{i} = {i * 7}\n"
    if i % 10 == 5:
        return (f"class Item{i}:\n    kind = 'item{i}'\n\n"
                f"    def __init__(self, value):\n        self.value = value\n\n"
                f"    def scaled(self, factor=2):\n        return self.value * factor + {i}\n\n"
                f"    def __repr__(self):\n        return f'Item{i}({{self.value!r}})'\n")
    if i % 4 == 0:
        return f"def fn_{i}(x):\n    return math.sqrt(abs(x)) + {i}\n"
    if i % 4 == 1:
        return f"def fn_{i}(x, y=1):\n    z = x * y\n    return z - {i}\n"
    if i % 4 == 2:
        return (f"def fn_{i}(items):\n    total = 0\n    for item in items:\n"
                f"        total += item % {i + 1}\n    return total\n")
    return (f"def fn_{i}(text):\n    \"\"\"Normalised text, tagged.\"\"\"\n"
            f"    return text.strip().lower() + '{i}'\n")


def module_source(n, k, inserts=None):
    """A module of ``n`` definitions whose middle one is ``target`` (returns ``2 * x + k``);
    ``inserts`` maps an index to the definition to put there instead."""
    chosen = {n // 2: TARGET.format(k=k), **(inserts or {})}
    parts = [HEADER.format(n=n)]
    for i in range(n):
        parts.append(chosen.get(i) or definition(i))
        parts.append("\n\n")
    return "".join(parts)


ENCODE = ("def encode(x):\n    return x + 1\n", "def encode(x):\n    return x * 3 + 2\n")
DECODE = ("def decode(y):\n    return y - 1\n", "def decode(y):\n    return (y - 2) // 3\n")
CODEC_SIZE = 100


def codec_source(version):
    """Version ``version % 2`` of a module of 100 definitions with ``encode`` and ``decode``."""
    n = CODEC_SIZE
    return module_source(n, 0, {n // 3: ENCODE[version % 2], 2 * n // 3: DECODE[version % 2]})


def encoded_five(version):
    return 5 + 1 if version % 2 == 0 else 5 * 3 + 2


class Workspace:
    """A temporary directory on ``sys.path`` where the generated modules are written and
    imported from. Every write gets an mtime of its own, a second after the previous one (reload
    and autoreload compare mtimes, in whole seconds for the bytecode cache)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pymoult-bench-module-")
        sys.path.insert(0, self.dir)
        self.names = []
        self.stamp = 10**9

    def path(self, name):
        return os.path.join(self.dir, f"{name}.py")

    def write(self, name, source):
        path = self.path(name)
        with open(path, "w") as out:
            out.write(source)
        self.stamp += 1
        os.utime(path, ns=(self.stamp * 10**9, self.stamp * 10**9))

    def load(self, name, source):
        self.write(name, source)
        importlib.invalidate_caches()
        self.names.append(name)
        return importlib.import_module(name)

    def unload(self, name):
        sys.modules.pop(name, None)

    def close(self):
        for name in self.names:
            self.unload(name)
        sys.path.remove(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the tools: each makes a new version of a module live ---------------------------------------


class NotApplied(Exception):
    """An update a tool reported done, but the module does not run the new code."""


class Tool:
    """One tool updating one module. ``apply(source)`` makes ``source`` live and returns the
    seconds it took (and a split, or None); ``update`` also checks that it took effect."""

    label = ""

    def __init__(self, space, name, source):
        self.space, self.name = space, name
        self.module = space.load(name, source)
        self.module.bump()  # module state that an update should keep
        self.held = getattr(self.module, "target", None)  # a reference taken before any update
        self.references_follow = True
        self.state_kept = True

    def update(self, source, k):
        """Apply ``source`` (whose ``target`` returns ``2 * x + k``): (seconds, split), or
        :class:`NotApplied` when ``target`` does not return the new result."""
        seconds, split = self.apply(source)
        self.check(lambda: self.module.target(1), 2 + k)
        self.references_follow &= self.held(1) == 2 + k
        self.state_kept &= getattr(self.module, "counter", None) == 1
        return seconds, split

    def check(self, call, expected):
        try:
            got = call()
        except Exception as exc:
            got = exc
        if got != expected:
            raise NotApplied(f"{self.label}: an update of {self.name} did not take effect "
                             f"(got {got!r}, expected {expected!r}){self.why()}")

    def why(self):
        return ""

    def apply(self, source):
        raise NotImplementedError

    def close(self):
        self.space.unload(self.name)


class Pymoult(Tool):
    label = "Pymoult"

    def __init__(self, space, name, source, manager, threads=None, tracked=True):
        if tracked:  # as under ``pymoult run``: the source recorded at the import
            track_sources()
        try:
            super().__init__(space, name, source)
        finally:
            stop_tracking()
        self.manager, self.threads = manager, threads
        self.retries = 0  # updates refused at apply (a changed function started running)

    def apply(self, source):
        while True:
            start = time.perf_counter()
            update = ModuleUpdate(self.module, source=source, threads=self.threads,
                                  max_tries=100_000, sleep_time=0.001)
            made = time.perf_counter()
            try:
                self.manager.apply_update(update, timeout=WAIT)
            except (ModuleUpdateError, NotAlterableNow):
                if self.threads:
                    raise
                # a caller entered a changed function, or a call naming two of them, between
                # the check and the window, at each of the update's postponements: made again
                self.retries += 1
                continue
            end = time.perf_counter()
            return end - start, {"construct": made - start, "apply_update": end - made,
                                 "window": update.pause}

    def close(self):
        forget_version(self.module)  # the recorded version keeps the module's syntax trees
        super().close()


class Jurigged(Tool):
    label = "jurigged"

    def __init__(self, space, name, source):
        from jurigged.register import registry
        super().__init__(space, name, source)
        start = time.perf_counter()
        registry.prepare(name, space.path(name))
        self.codefile = registry.get(space.path(name))
        self.prepare_seconds = time.perf_counter() - start
        self.errors = []  # jurigged reports a failed definition as an event, not an exception
        self.codefile.activity.register(
            lambda event: self.errors.append(event) if isinstance(event, Exception) else None)

    def why(self):
        return f"; jurigged's errors: {self.errors!r}" if self.errors else ""

    def apply(self, source):
        self.errors.clear()
        self.space.write(self.name, source)
        start = time.perf_counter()
        self.codefile.refresh()
        return time.perf_counter() - start, None

    def close(self):
        from jurigged.register import registry
        registry.cache.pop(self.space.path(self.name), None)
        registry.precache.pop(self.space.path(self.name), None)
        super().close()


class Autoreload(Tool):
    """``ModuleReloader.check()`` of IPython's autoreload extension, without a shell, limited to
    this module (``%autoreload 1`` with the module marked by ``%aimport``: the same code path
    as ``%autoreload 2`` for a changed module, without stat-ing every other module)."""

    label = "IPython autoreload"
    _reloader = None

    def __init__(self, space, name, source):
        from IPython.extensions.autoreload import ModuleReloader
        super().__init__(space, name, source)
        if Autoreload._reloader is None:
            Autoreload._reloader = ModuleReloader()
            Autoreload._reloader.enabled = True
            Autoreload._reloader.check_all = False
        self.reloader = Autoreload._reloader
        self.reloader.mark_module_reloadable(name)
        self.reloader.check(do_reload=False)  # records the module's mtime (and its source)
        self.deduper = getattr(self.reloader, "deduper_reloader", None)
        self.paths = {"deduperreload": 0, "superreload": 0}
        if self.deduper is not None:
            patch = self.deduper.maybe_reload_module

            def maybe_reload_module(module):
                patched = patch(module)
                self.paths["deduperreload" if patched else "superreload"] += 1
                return patched
            self.deduper.maybe_reload_module = maybe_reload_module

    def apply(self, source):
        self.space.write(self.name, source)
        if self.deduper is not None:
            self.deduper.update_sources()  # sources of modules other tools imported meanwhile
        start = time.perf_counter()
        self.reloader.check()
        seconds = time.perf_counter() - start
        if self.deduper is None:
            self.paths["superreload"] += 1
        return seconds, None

    def close(self):
        self.reloader.modules.pop(self.name, None)
        if self.deduper is not None:
            del self.deduper.maybe_reload_module
        super().close()


class Superreload(Tool):
    label = "IPython superreload"

    def __init__(self, space, name, source):
        from IPython.extensions.autoreload import superreload
        super().__init__(space, name, source)
        self.superreload = superreload
        self.old_objects = {}  # kept across reloads, as ModuleReloader does

    def apply(self, source):
        self.space.write(self.name, source)
        start = time.perf_counter()
        self.superreload(self.module, importlib.reload, self.old_objects)
        return time.perf_counter() - start, None


class Reload(Tool):
    label = "importlib.reload"

    def apply(self, source):
        self.space.write(self.name, source)
        start = time.perf_counter()
        importlib.reload(self.module)
        return time.perf_counter() - start, None


def installed(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- apply time against the module's size -------------------------------------------------------


class Settings:
    """How long the apply-time part may run: ``rounds`` updates per tool and size, the first
    update of ``first_runs`` fresh modules, at most ``budget`` seconds of updates per tool and
    size (at least one update), and no size at which one update of a tool is predicted to take
    more than ``longest`` seconds (its median at the previous size, grown quadratically)."""

    def __init__(self, quick):
        self.rounds, self.first_runs, self.budget, self.longest = (
            (5, 1, 5.0, 20.0) if quick else (15, 3, 20.0, 600.0))


def ms(values):
    return statistics.median(values) * 1e3


SUPERRELOAD_LARGEST = 1000


def runs_superreload(cls):
    """Superreload, or autoreload on an IPython without deduperreload (before 9)."""
    if cls is Superreload:
        return True
    if cls is Autoreload:
        try:
            import IPython.extensions.deduperreload  # noqa: F401
        except ImportError:
            return True
    return False


def peer_classes():
    peers = []
    if installed("jurigged"):
        peers.append(Jurigged)
    if installed("ipython"):
        peers += [Autoreload, Superreload]
    return peers + [Reload]


def bench_size(space, manager, n, settings, peers):
    """Apply times at ``n`` definitions: {label: [seconds]}, Pymoult's splits, and the tools."""
    base = module_source(n, 0)
    first, untracked = [], []
    splits = {FIRST: [], "Pymoult": [], UNTRACKED: []}
    for run in range(settings.first_runs):  # the first update of a fresh module, each time
        for tracked, times, label in ((True, first, FIRST), (False, untracked, UNTRACKED)):
            tool = Pymoult(space, f"bm_first_{n}_{run}_{int(tracked)}", base, manager,
                           tracked=tracked)
            seconds, split = tool.update(module_source(n, 1), 1)
            times.append(seconds)
            splits[label].append(split)
            tool.close()
    steady = Pymoult(space, f"bm_pymoult_{n}", base, manager)
    steady.update(module_source(n, 1), 1)  # its first update, not counted
    tools = [steady] + [cls(space, f"bm_{cls.__name__.lower()}_{n}", base) for cls in peers]
    samples = {"Pymoult": [], FIRST: first, UNTRACKED: untracked}
    samples.update((tool.label, []) for tool in tools[1:])
    spent = dict.fromkeys(samples, 0.0)
    failures = []
    try:
        for round_ in range(settings.rounds):
            k = 1000 + round_
            source = module_source(n, k)
            for tool in tools:
                if round_ and spent[tool.label] >= settings.budget:
                    continue
                try:
                    seconds, split = tool.update(source, k)
                except NotApplied as exc:
                    failures.append(str(exc))  # an error, not a number
                    continue
                samples[tool.label].append(seconds)
                spent[tool.label] += seconds
                if split is not None:
                    splits["Pymoult"].append(split)
    finally:
        for tool in tools:
            tool.close()
    return samples, splits, tools, failures


def source_memory(n):
    """MB the source version of the module of ``n`` definitions holds (text, lines, statements):
    with every statement's syntax tree, as just parsed, and as recorded (trees let go)."""
    gc.collect()
    tracemalloc.start()
    try:
        version = parse_version(module_source(n, 0), f"bench_{n}.py")
        parsed = tracemalloc.get_traced_memory()[0]
        version.release_trees()
        gc.collect()
        recorded = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {"parsed_mb": parsed / 1e6, "recorded_mb": recorded / 1e6}


def bench_apply_times(settings):
    space = Workspace()
    manager = ThreadedManager("bench-module").start()
    results, semantics, notes = {}, {}, []
    previous = {}  # label -> (size, median seconds)
    try:
        for n in SIZES:
            peers = []
            for cls in peer_classes():
                if n > SUPERRELOAD_LARGEST and runs_superreload(cls):
                    notes.append(f"{cls.label} not run above {SUPERRELOAD_LARGEST:,} "
                                 "definitions: superreload looks for each class's instances "
                                 "with a scan of the whole heap, so its time is classes x heap "
                                 "objects (minutes at 5,000 here)")
                    continue
                if cls.label in previous:
                    size, seconds = previous[cls.label]
                    predicted = seconds * (n / size) ** 2
                    if predicted > settings.longest:
                        notes.append(f"{cls.label} skipped at {n:,} definitions: one update "
                                     f"predicted to take ~{predicted:.0f} s ({seconds:.1f} s at "
                                     f"{size:,}, grown quadratically; limit {settings.longest:.0f}"
                                     " s)")
                        continue
                peers.append(cls)
            samples, splits, tools, failures = bench_size(space, manager, n, settings, peers)
            notes += [f"at {n:,} definitions: {failure}" for failure in failures]
            steady_ms = ms(samples["Pymoult"])
            row = {"gc_objects": len(gc.get_objects()), "source_memory": source_memory(n)}
            for label, values in samples.items():
                if not values:
                    continue
                row[label] = {"median_ms": ms(values), "p90_ms": percentile(values, 0.9) * 1e3,
                              "runs": len(values), "ratio_to_pymoult": ms(values) / steady_ms}
                if label not in (FIRST, UNTRACKED):
                    row[label]["capped"] = len(values) < settings.rounds
                previous[label] = (n, statistics.median(values))
            for label, rows in splits.items():
                row[label]["split_ms"] = {key: ms([s[key] for s in rows])
                                          for key in ("construct", "apply_update", "window")}
            for tool in tools:
                known = semantics.setdefault(tool.label, {
                    "references_taken_before_follow": True, "module_state_kept": True})
                known["references_taken_before_follow"] &= tool.references_follow
                known["module_state_kept"] &= tool.state_kept
                if isinstance(tool, Jurigged):
                    row[tool.label]["prepare_ms_not_counted"] = tool.prepare_seconds * 1e3
                if isinstance(tool, Autoreload):
                    row[tool.label]["path"] = dict(tool.paths)
            results[str(n)] = row
    finally:
        manager.stop(WAIT)
        space.close()
    return {"rounds": settings.rounds, "first_runs": settings.first_runs,
            "budget_s": settings.budget, "longest_s": settings.longest, "by_size": results,
            "semantics": semantics, "notes": notes}


# -- torn calls -----------------------------------------------------------------------------------


def relay(value):
    """A Python call of the caller's own between ``encode`` and ``decode`` (a point where the
    interpreter may switch threads, outside the module's functions)."""
    return value


SHAPES = {
    "decode(encode(x))": lambda module, x: module.decode(module.encode(x)),
    "encode, a call, decode": lambda module, x: module.decode(relay(module.encode(x))),
}


class Callers:
    """Two DSU threads calling ``shape`` through the module, each followed by an update point;
    they count calls, torn calls (the round trip failed) and calls that raised."""

    def __init__(self, module, shape, count=2):
        self.stop = threading.Event()
        self.counts = [[0, 0, 0] for _ in range(count)]
        started = threading.Barrier(count + 1, timeout=10)

        def worker(slot):
            started.wait()
            x = 0
            while not self.stop.is_set():
                x += 1
                try:
                    if shape(module, x) != x:
                        slot[1] += 1
                except Exception:
                    slot[2] += 1
                slot[0] += 1
                staticUpdatePoint()

        self.threads = [DSU_Thread(target=worker, args=(slot,), name=f"caller-{i}", daemon=True)
                        for i, slot in enumerate(self.counts)]
        for thread in self.threads:
            thread.start()
        started.wait()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(WAIT)
            if thread.is_alive():
                raise RuntimeError(f"{thread.name} did not stop")
        return [sum(c[i] for c in self.counts) for i in range(3)]


def torn_variants():
    variants = [("Pymoult, quiescence (no threads)", Pymoult, False),
                ("Pymoult, update points (threads)", Pymoult, True)]
    return variants + [(cls.label, cls, None) for cls in peer_classes()]


SUPERRELOAD_TORN_UPDATES = 10  # each takes seconds here, with two busy callers


def bench_torn(updates):
    space = Workspace()
    manager = ThreadedManager("bench-module-torn").start()
    results = {}
    serial = 0
    try:
        for shape_label, shape in SHAPES.items():
            rows = results[shape_label] = {}
            for label, cls, with_threads in torn_variants():
                serial += 1
                name = f"bm_codec_{serial}"
                if cls is Pymoult:
                    tool = Pymoult(space, name, codec_source(0), manager)
                else:
                    tool = cls(space, name, codec_source(0))
                callers = Callers(tool.module, shape)
                if with_threads:
                    tool.threads = callers.threads
                start, failures = time.perf_counter(), []
                count = min(updates, SUPERRELOAD_TORN_UPDATES) if runs_superreload(cls) else updates
                try:
                    for version in range(1, count + 1):
                        tool.apply(codec_source(version))
                        try:
                            tool.check(lambda: tool.module.encode(5), encoded_five(version))
                        except NotApplied as exc:
                            failures.append(str(exc))
                        time.sleep(0.002)  # let the callers run in the new version
                finally:
                    calls, torn, raised = callers.finish()
                    tool.close()
                row = {"calls": calls, "torn": torn, "raised": raised, "updates": count,
                       "seconds": time.perf_counter() - start, "not_applied": failures}
                if cls is Pymoult and not with_threads:
                    row["resubmitted"] = tool.retries
                if cls is Autoreload:
                    row["path"] = dict(tool.paths)
                rows[label] = row
    finally:
        manager.stop(WAIT)
        space.close()
    return results


# -- report ---------------------------------------------------------------------------------------


def print_apply_times(apply):
    rows = apply["by_size"]
    labels = []
    for row in rows.values():
        labels += [label for label, cell in row.items()
                   if isinstance(cell, dict) and "median_ms" in cell and label not in labels]
    width = max(len(label) for label in labels) + 2
    print(f"\nApply time of a one-line change, median ms (runs; * = stopped by the "
          f"{apply['budget_s']:.0f} s budget per tool and size; - = skipped):")
    print("  " + f"{'definitions':>11}" + "".join(f"{label:>{width}}" for label in labels))
    for n, row in rows.items():
        cells = []
        for label in labels:
            cell = row.get(label)
            if cell is None:
                cells.append(f"{'-':>{width}}")
                continue
            mark = "*" if cell.get("capped") else ""
            cells.append(f"{cell['median_ms']:.1f} ({cell['runs']}{mark})".rjust(width))
        print(f"  {int(n):>11,}" + "".join(cells))
    print("\n  ratio to Pymoult's steady state:")
    print("  " + f"{'definitions':>11}" + "".join(f"{label:>{width}}" for label in labels[1:]))
    for n, row in rows.items():
        cells = [(f"{row[label]['ratio_to_pymoult']:.1f}x" if label in row else "-").rjust(width)
                 for label in labels[1:]]
        print(f"  {int(n):>11,}" + "".join(cells))
    print("\n  Pymoult, median ms: construction (compare + trial evaluation) / apply_update / "
          "stop-the-world window in it")
    for n, row in rows.items():
        steady, first = row["Pymoult"]["split_ms"], row[FIRST]["split_ms"]
        print(f"  {int(n):>11,}  steady {steady['construct']:7.2f} / {steady['apply_update']:6.2f}"
              f" / {steady['window']:5.2f}    first update {first['construct']:7.1f} / "
              f"{first['apply_update']:6.2f} / {first['window']:5.2f}")
    print("  source version held for the module, MB, as parsed / as recorded (trees let go): "
          + ", ".join(f"{row['source_memory']['parsed_mb']:.1f} / "
                      f"{row['source_memory']['recorded_mb']:.1f} at {int(n):,}"
                      for n, row in rows.items()))
    print("  gc-tracked objects in the process (superreload and jurigged scan them): "
          + ", ".join(f"{row['gc_objects']:,} at {int(n):,}" for n, row in rows.items()))
    for n, row in rows.items():
        cell = row.get("jurigged")
        if cell and "prepare_ms_not_counted" in cell:
            print(f"  jurigged registry.prepare + get at {int(n):,} definitions (once, not "
                  f"counted): {cell['prepare_ms_not_counted']:.0f} ms")
    for n, row in rows.items():
        cell = row.get("IPython autoreload")
        if cell:
            print(f"  IPython autoreload at {int(n):,} definitions went through: "
                  + ", ".join(f"{p} {c}" for p, c in cell["path"].items() if c))
    print("\n  after the updates:           references taken before follow   module state kept")
    for label, row in apply["semantics"].items():
        print(f"  {label:28} {'yes' if row['references_taken_before_follow'] else 'no':>30}"
              f"   {'yes' if row['module_state_kept'] else 'no':>17}")
    for note in apply["notes"]:
        print(f"  ({note})")
    largest = rows[str(SIZES[-1])]["Pymoult"]["median_ms"]
    verdict = "met" if largest <= TARGET_MS else "MISSED"
    first = rows[str(SIZES[-1])][FIRST]["median_ms"]
    print(f"  Pymoult first update at {SIZES[-1]:,} definitions, sources tracked: {first:.1f} ms "
          f"(target <= {FIRST_TARGET_MS} ms: {'met' if first <= FIRST_TARGET_MS else 'MISSED'}"
          f"; untracked: {rows[str(SIZES[-1])][UNTRACKED]['median_ms']:.1f} ms)")
    print(f"\n  Pymoult steady state at {SIZES[-1]:,} definitions: {largest:.1f} ms "
          f"(target <= {TARGET_MS} ms: {verdict})")


def print_torn(torn):
    print(f"\nTorn calls: two caller threads, a module of {CODEC_SIZE} definitions switched "
          "between two versions that change encode and decode together:")
    for shape, rows in torn.items():
        print(f"  calls {shape}:")
        for label, row in rows.items():
            extra = ""
            if "resubmitted" in row:
                extra = f", {row['resubmitted']} refused at apply and resubmitted"
            if "path" in row:
                extra = ", " + ", ".join(f"{p} {c}" for p, c in row["path"].items() if c)
            if row["not_applied"]:
                extra += f", {len(row['not_applied'])} did not take effect: {row['not_applied'][0]}"
            print(f"    {label:34} {row['torn']:7,} torn of {row['calls']:>11,} calls "
                  f"({row['torn'] / row['updates']:7.1f} per update), {row['raised']:6,} raised"
                  f" ({row['updates']} updates in {row['seconds']:.1f} s{extra})")


def main():
    args = parse_args("Pymoult module update benchmark", "module_update.json",
                      "fewer runs, smaller time limits (the quadratic peers skip 5,000)")
    versions = {"jurigged": installed("jurigged"), "ipython": installed("ipython")}
    peers = ", ".join(f"{name} {version or 'not installed (pip install -e .[bench])'}"
                      for name, version in versions.items())
    print(f"Pymoult module update benchmark, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {peers}")
    torn = bench_torn(20 if args.quick else 50)  # first: superreload's time grows with the heap
    print_torn(torn)
    apply = bench_apply_times(Settings(args.quick))
    print_apply_times(apply)
    write_json({"peers": versions, "target_ms": TARGET_MS, "first_target_ms": FIRST_TARGET_MS,
                "apply": apply, "torn": torn},
               args.json)


if __name__ == "__main__":
    main()
