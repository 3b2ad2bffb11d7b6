"""Suspension benchmark: how long it takes to suspend a thread, by what it is doing, and what a
suspended thread's neighbours pay.

    python benchmarks/bench_suspension.py [--quick] [--json PATH]

Side by side, in one run, ROUNDS rounds each (median, p90 and max, in ms):

- *point*: a DSU thread looping over ``staticUpdatePoint()``: it parks at its point (the
  precise way, unchanged);
- *busy*: a plain thread looping over pure Python with no point: the trap parks it at its next
  line, after the 20 ms grace it is given to reach a point;
- *busy, no grace*: the same suspended with ``grace=0``: the trap alone;
- *sleeping*: a plain thread looping over ``time.sleep(0.05)`` and a call: it counts as
  suspended while it sleeps (no wait for the sleep to end);
- *waiting*: a plain thread blocked in ``Event.wait()``.

Each round: ``suspend_thread`` then ``wait_thread_suspended``, timed; then ``resume_thread`` and
the time until the thread has run again. The idle cost of an update point is not changed by
suspension (its fast path is the same global test): ``bench_core.py`` measures it.
"""

import pathlib
import statistics
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import parse_args, percentile, write_json  # noqa: E402

from pymoult.lowlevel.alterability import (resume_thread, staticUpdatePoint,  # noqa: E402
                                           suspend_thread, wait_thread_suspended)
from pymoult.threads import DSU_Thread  # noqa: E402

WAIT = 10.0


def point_loop(stop, ticks):
    while not stop.is_set():
        ticks[0] += 1
        staticUpdatePoint()


def busy_loop(stop, ticks):
    while not stop.is_set():
        ticks[0] += 1


def sleep_loop(stop, ticks):
    while not stop.is_set():
        time.sleep(0.05)
        ticks[0] += 1


def wait_loop(stop, ticks):
    while not stop.is_set():
        ticks[0] += 1
        stop.wait()


KINDS = [  # (label, loop, DSU thread?, grace)
    ("point (DSU thread at staticUpdatePoint)", point_loop, True, None),
    ("busy plain thread, no point", busy_loop, False, None),
    ("busy plain thread, no point, grace=0", busy_loop, False, 0),
    ("plain thread in time.sleep", sleep_loop, False, None),
    ("plain thread in Event.wait", wait_loop, False, None),
]


def measure(loop, dsu, grace, rounds):
    stop, ticks = threading.Event(), [0]
    thread = (DSU_Thread if dsu else threading.Thread)(target=loop, args=(stop, ticks),
                                                      daemon=True)
    thread.start()
    while ticks[0] == 0:
        time.sleep(0.001)
    suspend, resume = [], []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            suspend_thread(thread, grace=grace)
            if not wait_thread_suspended(thread, WAIT):
                raise RuntimeError(f"{loop.__name__}: not suspended within {WAIT} s")
            suspend.append(time.perf_counter() - start)
            before = ticks[0]
            start = time.perf_counter()
            resume_thread(thread)
            if loop is not wait_loop and loop is not sleep_loop:
                while ticks[0] == before:
                    time.sleep(0)
                resume.append(time.perf_counter() - start)
            time.sleep(0.002)
    finally:
        stop.set()
        resume_thread(thread)
        thread.join(WAIT)
    return suspend, resume


def summary(values):
    if not values:
        return None
    ms = [v * 1e3 for v in values]
    return {"median": statistics.median(ms), "p90": percentile(ms, 0.9), "max": max(ms)}


def main():
    args = parse_args("Pymoult suspension benchmark", "suspension.json",
                      "10 rounds per kind instead of 50")
    rounds = 10 if args.quick else 50
    rows = []
    print(f"Python {sys.version.split()[0]}, {rounds} rounds per kind (ms: median / p90 / max)")
    print(f"{'thread':45} {'suspend':>24} {'resume -> running':>24}")
    for label, loop, dsu, grace in KINDS:
        suspend, resume = measure(loop, dsu, grace, rounds)
        row = {"kind": label, "suspend_ms": summary(suspend), "resume_ms": summary(resume)}
        rows.append(row)
        cells = []
        for key in ("suspend_ms", "resume_ms"):
            s = row[key]
            cells.append("-" if s is None
                         else f"{s['median']:.2f} / {s['p90']:.2f} / {s['max']:.2f}")
        print(f"{label:45} {cells[0]:>24} {cells[1]:>24}")
    write_json({"rounds": rounds, "kinds": rows}, args.json)


if __name__ == "__main__":
    main()
