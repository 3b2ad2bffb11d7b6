"""Quiescence benchmark: what one quiescence check costs with 2, 50 and 500 threads alive.

    python benchmarks/bench_quiescence.py [--quick] [--json PATH]

A quiescence check reads every thread's stack (``sys._current_frames()`` plus each DSU thread's
suspended continuation) and walks it looking for the code of the functions an update changes.
Its cost grows with the number of threads and the depth of their stacks, not with the program's
size. Here N DSU threads (N = 2, 50, 500) each sit ``DEPTH`` Python frames deep; the functions
looked for (five) run nowhere, so every frame of every stack is visited (the worst case: a
function found running ends the walk early). Figures, per call (median of 5 timed batches):

- snapshot, first: ``checkQuiescenceOfFunctions(funcs)`` with no threads named, the threads
  idle (blocked in a wait), the first check (``forget_stacks()`` before each): one walk of every
  stack. ``isAnyCodeInAnyStack(codes)`` (the code objects computed once) is the walk alone;
- snapshot, repeated: the same check again, as an update waiting for quiescence makes it at
  each try: a thread whose top frame is the one it had at the previous check is not walked
  again (its stack's summary is reused; see ``pymoult._stacks.thread_stacks``);
- parked: ``checkQuiescenceOfFunctions(funcs, threads)`` naming all N threads, already parked at
  their update points (how an update that names its threads checks, once they have parked; the
  time to park them is bench_core.py's park latency, per thread);
- first, plain threads: the first check again, with N plain ``threading.Thread`` objects in the
  DSU threads' place, as deep. A DSU thread's walk stops at the frame that calls its main (the
  frames below are Pymoult's and threading's, read once when it started); a plain thread's is
  walked to its first frame, three frames more;
- the peer, a bare walk: a loop that reads every thread's frames once (``f_code.co_name`` and
  ``f_back``), the least a check written in Python can do, with none of Pymoult's bookkeeping;
  the first check is also given as a ratio to it.
"""

import os
import pathlib
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import parse_args, write_json  # noqa: E402

from pymoult.lowlevel.alterability import (checkQuiescenceOfFunctions,  # noqa: E402
                                           forget_stacks, isAnyCodeInAnyStack,
                                           resumeSuspendedThreads, staticUpdatePoint)
from pymoult.threads import DSU_Thread  # noqa: E402

DEPTH = 20  # Python frames below each thread's wait (a web handler's stack is 20-40 deep)
WAIT = 30.0


def changed_1():
    pass


def changed_2():
    pass


def changed_3():
    pass


def changed_4():
    pass


def changed_5():
    pass


FUNCTIONS = [changed_1, changed_2, changed_3, changed_4, changed_5]


class Idlers:
    """``count`` threads (DSU threads, or of ``kind``), each ``DEPTH`` frames deep, blocked until
    ``go`` is set; then they reach an update point and wait again."""

    def __init__(self, count, kind=DSU_Thread):
        self.go, self.stop = threading.Event(), threading.Event()
        self.started = threading.Barrier(count + 1, timeout=WAIT)
        self.threads = [kind(target=self._nest, args=(DEPTH,), daemon=True,
                             name=f"idle {i}") for i in range(count)]
        for thread in self.threads:
            thread.start()
        self.started.wait()

    def _nest(self, depth):
        if depth > 1:
            return self._nest(depth - 1)
        self.started.wait()
        while not self.stop.is_set():
            self.go.wait()
            staticUpdatePoint()

    def park(self):
        for thread in self.threads:
            thread.suspend()
        self.go.set()
        for thread in self.threads:
            if not thread.wait_suspended(WAIT):
                raise RuntimeError(f"{thread.name} did not park")
        self.go.clear()  # once resumed, they wait again

    def close(self):
        self.stop.set()
        resumeSuspendedThreads(self.threads)
        self.go.set()
        for thread in self.threads:
            thread.join(WAIT)


def frames_alive():
    """Python frames on every thread's stack now."""
    total = 0
    for frame in sys._current_frames().values():
        while frame is not None:
            total += 1
            frame = frame.f_back
    return total


def bare_walk(names):
    """The peer: the least a check can do from Python, each thread's frames read once for their
    code's name (``sys._current_frames()``, then ``f_code.co_name`` and ``f_back`` per frame),
    with none of Pymoult's bookkeeping (hidden frames, summaries, identity of the codes)."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name in names:
                return True
            frame = frame.f_back
    return False


def per_call(function, calls, batches=7):
    """Seconds per call of ``function()``, in the fastest of ``batches`` timed batches."""
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(calls):
            function()
        samples.append((time.perf_counter_ns() - start) / calls / 1e9)
    return min(samples)


def first_check():
    forget_stacks()
    checkQuiescenceOfFunctions(FUNCTIONS)


def bench_plain(count, calls):
    """Seconds per first check with ``count`` plain threads idle, ``DEPTH`` frames deep."""
    idlers = Idlers(count, threading.Thread)
    try:
        if checkQuiescenceOfFunctions(FUNCTIONS) is not True:
            raise RuntimeError("the functions looked for must not be running")
        return per_call(first_check, calls)
    finally:
        idlers.close()


def bench(count, calls):
    idlers = Idlers(count)
    try:
        codes = [f.__code__ for f in FUNCTIONS]
        frames = frames_alive()
        if checkQuiescenceOfFunctions(FUNCTIONS) is not True:
            raise RuntimeError("the functions looked for must not be running")

        first = per_call(first_check, calls)
        snapshot = per_call(lambda: checkQuiescenceOfFunctions(FUNCTIONS), calls)
        walk = per_call(lambda: isAnyCodeInAnyStack(codes), calls)
        names = frozenset(f.__name__ for f in FUNCTIONS)
        if bare_walk(names):
            raise RuntimeError("the functions looked for must not be running")
        bare = per_call(lambda: bare_walk(names), calls)
        idlers.park()
        try:
            if checkQuiescenceOfFunctions(FUNCTIONS, idlers.threads) is not True:
                raise RuntimeError("the check with parked threads did not answer yes")
            parked = per_call(lambda: checkQuiescenceOfFunctions(FUNCTIONS, idlers.threads),
                              calls)
        finally:
            resumeSuspendedThreads(idlers.threads)
    finally:
        idlers.close()
    plain = bench_plain(count, calls)
    us = 1e6
    return {"threads": count, "depth": DEPTH, "frames_alive": frames, "calls_per_batch": calls,
            "snapshot_first_us": first * us, "snapshot_us": snapshot * us, "walk_us": walk * us,
            "parked_us": parked * us, "snapshot_first_ns_per_frame": first * 1e9 / frames,
            "plain_first_us": plain * us, "bare_walk_us": bare * us,
            "first_over_bare_walk": first / bare}


def main():
    args = parse_args("Pymoult quiescence check benchmark", "quiescence.json",
                      "fewer calls per batch")
    rows = {}
    for count in (2, 50, 500):
        calls = max(5, (2000 if not args.quick else 200) * 2 // count)
        rows[str(count)] = bench(count, calls)

    print(f"Pymoult quiescence check benchmark, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; threads {DEPTH} frames deep, 5 functions looked for "
          "(running nowhere: every frame visited)")
    print(f"  {'threads':>8} {'frames':>8} {'first us':>9} {'ns/frame':>9} {'walk only us':>13} "
          f"{'repeated us':>12} {'parked, named us':>17} {'first, plain threads us':>24} "
          f"{'bare walk (peer) us':>20}")
    for row in rows.values():
        print(f"  {row['threads']:8} {row['frames_alive']:8,} {row['snapshot_first_us']:9.1f} "
              f"{row['snapshot_first_ns_per_frame']:9.1f} {row['walk_us']:13.1f} "
              f"{row['snapshot_us']:12.1f} {row['parked_us']:17.1f} "
              f"{row['plain_first_us']:24.1f} {row['bare_walk_us']:13.1f} "
              f"({row['first_over_bare_walk']:.2f}x)")
    write_json({"by_threads": rows, "depth": DEPTH, "functions": len(FUNCTIONS)}, args.json)


if __name__ == "__main__":
    main()
