"""Data benchmark: converting many live objects, and what converted objects cost afterwards.

    python benchmarks/bench_data.py [--quick] [--json PATH]

Figures (objects/s, finding included; medians of repeated runs with fresh objects each time,
the cyclic collector on, as applications run):
- eager update, class updated in place, one-field transformer, atomic (each object's state saved
  first: exact rollback whatever the transformer does);
- the same for objects that also hold a dict (their state is checked one object at a time);
- the same, ``atomic=False`` (nothing saved);
- ``__class__`` swap plus the one-field transformer (the original Pymoult's way), raw loop: the
  peer every row is also given as a ratio to;
- the share of each run's time spent in garbage collection (``gc.callbacks``);
- lazy conversion: cost per object to start it, cost of each object's first touch (the
  transformer included);
- attribute read cost of converted objects vs objects of a class never converted, for the
  in-place, swap and lazy paths (on 3.11+ a swapped object's reads stay slower for life).
"""

import gc
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import parse_args, write_json  # noqa: E402

from pymoult.lowlevel.data_access import instances_of, startEagerUpdate, startLazyUpdate  # noqa: E402


class Record:
    def __init__(self, n):
        self.n = n


class RecordV2:
    def __init__(self, n):
        self.n = n
        self.double = 2 * n


class Untouched:
    def __init__(self, n):
        self.n = n


class WithDict:
    def __init__(self, n):
        self.n = n
        self.meta = {}


class Probe:
    def __init__(self, n):
        self.n = n


def one_field(obj):
    obj.double = 2 * obj.n


class GcClock:
    """Seconds spent in cyclic collections while the block runs (``gc.callbacks``)."""

    def __enter__(self):
        self.spent, self._began = 0.0, None
        gc.callbacks.append(self._callback)
        return self

    def _callback(self, phase, info):
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:
            self.spent += time.perf_counter() - self._began
            self._began = None

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)
        return False


def run_eager(count, atomic, cls=Record):
    objects = [cls(i) for i in range(count)]
    gc.collect()
    with GcClock() as clock:
        start = time.perf_counter()
        converted = startEagerUpdate(cls, one_field, atomic=atomic, subclasses=False)
        elapsed = time.perf_counter() - start
    assert converted == count and objects[-1].double == 2 * (count - 1)
    return count / elapsed, clock.spent / elapsed, objects


def run_swap(count):
    objects = [Record(i) for i in range(count)]
    gc.collect()
    with GcClock() as clock:
        start = time.perf_counter()
        for obj in instances_of(Record, subclasses=False):
            obj.__class__ = RecordV2
            obj.double = 2 * obj.n
        elapsed = time.perf_counter() - start
    assert type(objects[0]) is RecordV2
    rate = count / elapsed
    for obj in objects:
        obj.__class__ = Record  # leave no RecordV2 around for the next run
    return rate, clock.spent / elapsed, objects


class Lazy:
    def __init__(self, n):
        self.n = n


def run_lazy(count):
    objects = [Lazy(i) for i in range(count)]
    gc.collect()
    start = time.perf_counter()
    conversion = startLazyUpdate(Lazy, one_field)
    started = time.perf_counter()
    for obj in objects:
        obj.n
    touched = time.perf_counter()
    assert conversion.done.is_set() and objects[-1].double == 2 * (count - 1)
    return (started - start) / count * 1e9, (touched - started) / count * 1e9


def read_cost(obj, rounds=200_000):
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(rounds):
            obj.n
            obj.n
            obj.n
            obj.n
        best = min(best, (time.perf_counter_ns() - start) / rounds / 4)
    return best


def main():
    args = parse_args("Pymoult data conversion benchmark", "data.json", "fewer and smaller runs")
    sizes, repeats = ((20_000, 100_000), 3) if args.quick else ((100_000, 1_000_000), 5)

    peer = "__class__ swap + transformer"
    results = {"sizes": {}, "gc_share": {}, "ratio_to_swap": {}}
    for count in sizes:
        runners = {"eager in place, atomic": lambda: run_eager(count, True),
                   "eager in place, atomic, objects holding a dict":
                       lambda: run_eager(count, True, WithDict),
                   "eager in place, atomic=False": lambda: run_eager(count, False),
                   peer: lambda: run_swap(count)}
        rates, shares = {label: [] for label in runners}, {label: [] for label in runners}
        for _ in range(repeats):  # peers interleaved: a load change hits them all alike
            for label, runner in runners.items():
                rate, share, objects = runner()
                rates[label].append(rate)
                shares[label].append(share)
                del objects
        row = {label: statistics.median(values) for label, values in rates.items()}
        results["sizes"][count] = row
        results["gc_share"][count] = {label: statistics.median(values)
                                      for label, values in shares.items()}
        results["ratio_to_swap"][count] = {label: rate / row[peer] for label, rate in row.items()}

    lazy_rows = {}
    for count in sizes:
        runs = [run_lazy(count) for _ in range(repeats)]  # each run's objects die with it
        lazy_rows[count] = {"start_ns_per_object": statistics.median(r[0] for r in runs),
                            "first_touch_ns": statistics.median(r[1] for r in runs)}
    results["lazy"] = lazy_rows
    lazily = Lazy(1)
    startLazyUpdate(Lazy, one_field)
    lazily.n  # converted on this first touch

    plain = Untouched(1)
    in_place = Record(1)
    one_field(in_place)
    swapped = Record(1)
    swapped.__class__ = RecordV2
    swapped.__class__ = Record
    eager = [Probe(i) for i in range(9)]
    startEagerUpdate(Probe, one_field, subclasses=False)  # one object is read to learn the shape
    reads = {"never converted": read_cost(plain), "converted in place": read_cost(in_place),
             "converted by an atomic eager update": statistics.median(map(read_cost, eager)),
             "converted by __class__ swap": read_cost(swapped),
             "converted lazily": read_cost(lazily)}
    results["read_ns"] = reads

    print(f"Pymoult data benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"\nConversion throughput (M objects/s, finding included, median of {repeats}; "
          f"x the {peer} peer; share of time in GC, collector on):")
    labels = list(next(iter(results["sizes"].values())))
    print(f"  {'':48}" + "".join(f"{count:>26,}" for count in sizes))
    for label in labels:
        print(f"  {label:48}" + "".join(
            f"{results['sizes'][c][label] / 1e6:9.2f} {results['ratio_to_swap'][c][label]:6.2f}x"
            f" {results['gc_share'][c][label]:6.1%}  " for c in sizes))
    print("\nLazy conversion (ns per object, median):")
    for count, row in lazy_rows.items():
        print(f"  {count:>9,} objects: start {row['start_ns_per_object']:7.1f}   "
              f"first touch (transformer included) {row['first_touch_ns']:7.1f}")
    print("\nAttribute read after conversion (ns, best of 5):")
    for label, value in reads.items():
        ratio = value / reads["never converted"]
        print(f"  {label:36} {value:6.1f}   {ratio:.2f}x")

    write_json(results, args.json)


if __name__ == "__main__":
    main()
