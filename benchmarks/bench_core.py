"""Core runtime benchmark: the cost of an idle update point, and how fast threads park and wake.

    python benchmarks/bench_core.py [--quick] [--json PATH]

Figures (medians of repeated runs, all variants interleaved in the same run):
- idle update point: ns per loop iteration with no point, with a call to an empty function, with
  ``staticUpdatePoint()``, and with the original Pymoult's style of point (``current_thread()``
  and an attribute test), plus the net cost ratios (loop overhead subtracted);
- park latency: ``suspend()`` to ``wait_suspended()`` returning, for a thread looping over points;
- wake-up latency: ``resume()`` to the thread running again after its point (median, p99);
- stop-the-world: time to enter a window with 0 and 2 busy threads, and how many windows that
  reported themselves exclusive saw another thread run (must be 0).
"""

import os
import pathlib
import statistics
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import parse_args, percentile, write_json  # noqa: E402

from pymoult.lowlevel.alterability import staticUpdatePoint, update_point  # noqa: E402
from pymoult.lowlevel.world import stop_the_world  # noqa: E402
from pymoult.threads import DSU_Thread  # noqa: E402


def empty():
    pass


def pymoult_original_point():
    """The shape of the original Pymoult's point: look up the thread, test its attribute."""
    thread = threading.current_thread()
    if getattr(thread, "update_requested", False):
        pass


def loop_none(n):
    for _ in range(n):
        pass


def loop_empty_call(n):
    for _ in range(n):
        empty()


def loop_update_point(n):
    for _ in range(n):
        staticUpdatePoint()


def loop_zero_arg_point(n):
    for _ in range(n):
        update_point()


def loop_original_pymoult_point(n):
    for _ in range(n):
        pymoult_original_point()


LOOPS = {
    "no point": loop_none,
    "empty function call": loop_empty_call,
    "staticUpdatePoint()": loop_update_point,
    "update_point()": loop_zero_arg_point,
    "original Pymoult point (peer)": loop_original_pymoult_point,
}


def bench_idle_point(repeats, n):
    samples = {name: [] for name in LOOPS}
    for _ in range(repeats):
        for name, loop in LOOPS.items():  # interleaved: the machine's noise hits all alike
            start = time.perf_counter_ns()
            loop(n)
            samples[name].append((time.perf_counter_ns() - start) / n)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["no point"]
    net = {name: value - base for name, value in medians.items()}
    return {
        "ns_per_iteration": medians,
        "net_ns": net,
        "ratio_point_vs_empty_call": net["staticUpdatePoint()"] / net["empty function call"],
        "ratio_zero_arg_point_vs_empty_call": net["update_point()"] / net["empty function call"],
        "ratio_point_vs_no_point": medians["staticUpdatePoint()"] / base,
        "ratio_original_pymoult_vs_point": (net["original Pymoult point (peer)"]
                                            / net["staticUpdatePoint()"]),
        "iterations": n,
        "repeats": repeats,
    }


def bench_park_and_wake(rounds):
    stop = threading.Event()
    woke = threading.Event()
    woke_at = [0.0]

    def worker():
        while not stop.is_set():
            staticUpdatePoint()
            if not woke.is_set():  # the first pass after a resume: when the thread ran again
                woke_at[0] = time.perf_counter()
                woke.set()

    thread = DSU_Thread(target=worker, daemon=True)
    thread.start()
    park, wake = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        thread.suspend()
        if not thread.wait_suspended(5):
            raise RuntimeError("thread did not park")
        park.append(time.perf_counter() - start)
        woke.clear()
        start = time.perf_counter()
        thread.resume()
        if not woke.wait(5):
            raise RuntimeError("thread did not wake")
        wake.append(woke_at[0] - start)
    stop.set()
    thread.join(5)
    us = 1e6
    return {
        "park_us": {"median": statistics.median(park) * us, "p99": percentile(park, 0.99) * us},
        "wake_us": {"median": statistics.median(wake) * us, "p99": percentile(wake, 0.99) * us},
        "rounds": rounds,
    }


def bench_stop_the_world(rounds):
    """Entry latency, and proof of exclusion: busy threads count while each window reads the
    counts at its start and after spinning for most of its guarantee."""
    results = {}
    for busy_count in (0, 2):
        stop = threading.Event()
        counts = [0] * busy_count

        def busy(i):
            while not stop.is_set():
                counts[i] += 1

        threads = [threading.Thread(target=busy, args=(i,), daemon=True)
                   for i in range(busy_count)]
        for thread in threads:
            thread.start()
        entries, exclusive, interleaved = [], 0, 0
        for _ in range(rounds):
            with stop_the_world() as window:
                before = list(counts)
                while window.remaining() > 0.1 * window.guarantee:
                    pass
                after = list(counts)
            entries.append(window.entry_latency)
            if window.exclusive:
                exclusive += 1
                interleaved += before != after
        stop.set()
        for thread in threads:
            thread.join(5)
        results[f"{busy_count} busy threads"] = {
            "entry_ms_median": statistics.median(entries) * 1e3,
            "entry_ms_p99": percentile(entries, 0.99) * 1e3,
            "exclusive_windows": f"{exclusive}/{rounds}",
            "interleaved_exclusive_windows": interleaved,
        }
    return results


def main():
    args = parse_args("Pymoult core runtime benchmark", "core.json", "fewer repeats (a smoke run)")
    repeats, n, rounds = (5, 200_000, 50) if args.quick else (21, 1_000_000, 500)

    idle = bench_idle_point(repeats, n)
    latency = bench_park_and_wake(rounds)
    world = bench_stop_the_world(max(20, rounds // 5))

    print(f"Pymoult core benchmark, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"\nIdle update point ({n:,} iterations, median of {repeats}):")
    print(f"  {'variant':34} {'ns/iter':>8} {'net ns':>8}")
    for name, value in idle["ns_per_iteration"].items():
        print(f"  {name:34} {value:8.1f} {idle['net_ns'][name]:8.1f}")
    print(f"  staticUpdatePoint / empty call (net): {idle['ratio_point_vs_empty_call']:.2f}x "
          "(target <= 1.3x)")
    print("  update_point() / empty call (net):    "
          f"{idle['ratio_zero_arg_point_vs_empty_call']:.2f}x")
    print(f"  loop with point / loop without:       {idle['ratio_point_vs_no_point']:.2f}x")
    print("  original Pymoult point / ours (net):  "
          f"{idle['ratio_original_pymoult_vs_point']:.2f}x")
    print(f"\nPark and wake-up ({rounds} rounds):")
    for label, key in (("suspend() -> parked", "park_us"),
                       ("resume() -> running again", "wake_us")):
        print(f"  {label:27} median {latency[key]['median']:7.1f} us   "
              f"p99 {latency[key]['p99']:7.1f} us")
    print("\nStop-the-world window (10 ms guarantee):")
    for name, row in world.items():
        print(f"  {name:15} entry median {row['entry_ms_median']:6.2f} ms  "
              f"p99 {row['entry_ms_p99']:6.2f} ms"
              f"  exclusive {row['exclusive_windows']}, other threads ran inside: "
              f"{row['interleaved_exclusive_windows']}")

    write_json({"idle_point": idle, "park_and_wake": latency, "stop_the_world": world},
               args.json)


if __name__ == "__main__":
    main()
