"""Data benchmark: converting many live objects, and what converted objects cost afterwards.

    python benchmarks/bench_data.py [--quick] [--json PATH]

Figures (objects/s, finding included; medians of repeated runs with fresh objects each time,
the cyclic collector on, as applications run; the smaller size is run three times as often):
- eager update, class updated in place, one-field transformer, atomic (each object's state saved
  first: exact rollback whatever the transformer does);
- the same for objects that also hold a dict (their state is checked one object at a time);
- the same, ``atomic=False`` (nothing saved);
- ``__class__`` swap plus the one-field transformer (the original Pymoult's way), raw loop: the
  peer every row is also given as a ratio to;
- the share of each run's time spent in garbage collection (``gc.callbacks``);
- lazy conversion: cost per object to start it, cost of each object's first touch (the
  transformer included);
- attribute read cost of converted objects vs a plain object (the peer: an object of a class
  never converted), for the in-place, swap and lazy paths: on 3.11+ ``__class__`` assignment
  leaves a split dict the specialiser cannot use (see ``pymoult/_cpython.py``); "swap, dict
  unshared" is the same swap followed by ``unshare_instance_dict``, as lazy conversion does.
  Each kind is read by its own copy of the reading loop (one shared loop would be specialised for
  whichever object it saw last), the kinds interleaved; medians over rounds, ratios per round.
"""

import gc
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import parse_args, write_json  # noqa: E402

from pymoult._cpython import unshare_instance_dict  # noqa: E402
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


READER = """
def read(obj, rounds):
    for _ in range(rounds):
        obj.n; obj.n; obj.n; obj.n; obj.n; obj.n; obj.n; obj.n
"""


def new_reader():
    """A fresh copy of the reading loop: its ``obj.n`` is specialised for one object's kind."""
    namespace = {}
    exec(READER, namespace)
    return namespace["read"]


def read_costs(objects, rounds, reads=50_000, batches=3):
    """``{label: (median ns per read, median ratio to the first label)}``, kinds interleaved."""
    readers = {label: new_reader() for label in objects}
    for label, obj in objects.items():
        readers[label](obj, 1000)  # warm up: specialised before timing
    samples = {label: [] for label in objects}
    ratios = {label: [] for label in objects}
    peer = next(iter(objects))
    for _ in range(rounds):
        for label, obj in objects.items():
            best = float("inf")
            for _ in range(batches):
                start = time.perf_counter_ns()
                readers[label](obj, reads)
                best = min(best, (time.perf_counter_ns() - start) / reads / 8)
            samples[label].append(best)
        for label in objects:
            ratios[label].append(samples[label][-1] / samples[peer][-1])
    return {label: (statistics.median(samples[label]), statistics.median(ratios[label]))
            for label in objects}


def main():
    args = parse_args("Pymoult data conversion benchmark", "data.json", "fewer and smaller runs")
    sizes, repeats = ((20_000, 100_000), 3) if args.quick else ((100_000, 1_000_000), 5)

    peer = "__class__ swap + transformer"
    results = {"sizes": {}, "gc_share": {}, "ratio_to_swap": {}, "runs": {}}
    for count in sizes:
        runners = {"eager in place, atomic": lambda: run_eager(count, True),
                   "eager in place, atomic, objects holding a dict":
                       lambda: run_eager(count, True, WithDict),
                   "eager in place, atomic=False": lambda: run_eager(count, False),
                   peer: lambda: run_swap(count)}
        rates, shares = {label: [] for label in runners}, {label: [] for label in runners}
        # a run of the smaller size lasts tens of milliseconds, so that a short disturbance of
        # the machine moves its median more: three times as many runs
        rounds = repeats if count == sizes[-1] else 3 * repeats
        results["runs"][count] = rounds
        for _ in range(rounds):  # peers interleaved: a load change hits them all alike
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
    unshared = Record(1)
    unshared.__class__ = RecordV2
    unshared.__class__ = Record
    unshare_instance_dict(unshared)
    eager = [Probe(i) for i in range(9)]
    startEagerUpdate(Probe, one_field, subclasses=False)  # one object is read to learn the shape
    costs = read_costs({"never converted (peer)": plain, "converted in place": in_place,
                        "converted by an atomic eager update": eager[-1],
                        "converted by __class__ swap": swapped,
                        "swap, dict unshared": unshared,
                        "converted lazily": lazily}, rounds=7 if args.quick else 21)
    results["read_ns"] = {label: ns for label, (ns, _) in costs.items()}
    results["read_ratio"] = {label: ratio for label, (_, ratio) in costs.items()}

    print(f"Pymoult data benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"\nConversion throughput (M objects/s, finding included, median of {3 * repeats} "
          f"and {repeats} runs; "
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
    print("\nAttribute read after conversion (ns, median; ratio to the peer, median per round):")
    for label, (value, ratio) in costs.items():
        print(f"  {label:36} {value:6.1f}   {ratio:.2f}x")

    write_json(results, args.json)


if __name__ == "__main__":
    main()
