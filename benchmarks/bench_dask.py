"""Dask benchmark: one code change on a live cluster of 2, 4 and 8 worker processes, three ways.

    python benchmarks/bench_dask.py [--quick] [--repeats N] [--sizes 2,4,8] [--json PATH]

Needs ``distributed`` (``pip install -e ".[dask]"``). For each size a ``LocalCluster`` of worker
processes (one thread each) holds data in memory (``4 x workers`` objects, each made by a task
that computes for ``MAKE_COST`` s) while a stream of short tasks runs (``2 x workers`` in
flight, one more submitted as each ends). The same change (``work``, ``label`` and
``Record.label`` return "v2" instead of "v1") is then made, in the same run, side by side:

- **pymoult**: ``update_cluster`` (``pymoult.delivery.dask_cluster``): every worker, and this
  process (the scheduler's, which imported the module), prepares, then applies at a safe point;
  undone afterwards (``undo_cluster``, timed too) so that the next peer starts clean;
- **upload_file**: the new file given to ``Client.upload_file``, which copies it to every worker
  and re-imports the module there with ``importlib.reload``;
- **restart**: the new file written over the old one, then ``Client.restart()`` and the data
  computed again (what a deployment without live update does).

Each peer has a module of its own (same code, another name), so none sees another's change.
Figures, medians of the repeats (each repeat runs the three peers in that order on one cluster):
wall time of the change as the client sees it (restart: restart plus recomputing the data);
for pymoult, the time the apply took on each worker (median over workers); the switch skew,
the spread between the first and the last process's switch, from time stamps taken on the
processes (pymoult: the end of the apply window; upload_file and restart: when the module's code
ran there); the stream's tasks that failed, of those that ran meanwhile; the tasks submitted
after the change returned that still ran the old code; whether the data stayed in memory
(not recomputed: the objects made before are still there); how many of the data objects run
the new code afterwards (``Record.label``).
"""

import argparse
import logging
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import RESULTS, write_json  # noqa: E402

try:
    import dask  # noqa: E402
    import distributed  # noqa: E402
except ImportError:
    sys.exit("bench_dask.py needs distributed: pip install -e '.[dask]'")

from pymoult.delivery.dask_cluster import undo_cluster, update_cluster  # noqa: E402

SIZES = (2, 4, 8)
MAKE_COST = 0.05  # seconds of computing per data object: what a restart must do again
WORK_COST = 0.002  # seconds per task of the stream
WAIT = 120.0
RESTART_TIMEOUT = 300.0  # Client.restart's: 8 worker processes start slowly on a busy machine
PEERS = ("pymoult", "upload_file", "restart")
# A LocalCluster closes a worker's nanny for good when, distributed.deploy.lost-worker-timeout
# (15 s) after that worker left, no worker of its name is registered. The check does not tell
# restarts apart: when the next repeat's restart is under way at that moment (restarts come
# about 10 s apart at 4 workers), it closes the nannies of the workers that this restart is
# bringing back; they never come back, and the restart times out. Here a worker that left is
# restarted, or the run fails on its own timeouts: no such close while the benchmark runs (the
# cluster reads the setting each time a worker leaves, so it stays set until the end).
LOST_WORKER_TIMEOUT = "24h"

V1 = f'''\
import os
import time
import uuid

LOADED_AT = time.time()  # when this process ran the module's code
MADE = 0


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Record:
    def __init__(self, number):
        self.number = number
        self.token = uuid.uuid4().hex

    def label(self):
        return "v1"


def make(number):
    global MADE
    MADE += 1
    spin({MAKE_COST})
    return Record(number)


def made():
    return MADE


def loaded_at():
    return LOADED_AT


def token_of(record):
    return record.token


def label_of(record):
    return record.label()


def work(x):
    spin({WORK_COST})
    return "v1"
'''
V2 = V1.replace('"v1"', '"v2"')


class Stream:
    """``in_flight`` tasks of ``module.work`` kept submitted from a thread until :meth:`stop`;
    records each task's submission time, future and end."""

    def __init__(self, client, module, in_flight):
        self.client, self.module, self.in_flight = client, module, in_flight
        self.tasks = []  # [submitted at, future]
        self.changed = threading.Condition()
        self.ended = 0
        self.error = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _submit(self, pending):
        future = self.client.submit(self.module.work, len(self.tasks), pure=False)
        self.tasks.append((time.monotonic(), future))
        pending.add(future)

    def _run(self):
        try:
            pending = distributed.as_completed()
            for _ in range(self.in_flight):
                self._submit(pending)
            for _ in pending:
                with self.changed:
                    self.ended += 1
                    self.changed.notify_all()
                if not self.stopping.is_set():
                    self._submit(pending)
        except Exception as exc:  # the client closed under it (a failed run): say so
            with self.changed:
                self.error = exc
                self.changed.notify_all()

    def wait_ended(self, count):
        with self.changed:
            target = self.ended + count
            if not self.changed.wait_for(lambda: self.ended >= target or self.error, WAIT):
                raise RuntimeError("the task stream stalled")
            if self.error is not None:
                raise RuntimeError(f"the task stream failed: {self.error!r}")

    def stop(self):
        self.stopping.set()
        self.thread.join(WAIT)

    def outcome(self, changed_at):
        """(tasks failed, tasks run, tasks submitted after ``changed_at`` that ran old code)."""
        failed = stale = 0
        for submitted, future in self.tasks:
            if future.status != "finished":
                failed += 1
            elif submitted > changed_at and future.result() != "v2":
                stale += 1
        return failed, len(self.tasks), stale


def module_for(directory, peer, repeat):
    name = f"bench_jobs_{peer}_{repeat}"
    (directory / f"{name}.py").write_text(V1)
    return name


def spread(times):
    return (max(times) - min(times)) if len(times) > 1 else None


def one_change(client, directory, peer, name, workers):
    """Make the change with ``peer`` while data is held and a stream runs; its figures."""
    module = __import__(name)
    data = client.map(module.make, range(4 * workers), pure=False)
    distributed.wait(data, timeout=WAIT)
    before = list(data)
    holders = client.who_has(before)
    tokens = client.gather(client.map(module.token_of, before, pure=False))
    stream = Stream(client, module, 2 * workers)
    stream.wait_ended(4 * workers)
    figures = {}
    began = time.monotonic()
    if peer == "pymoult":
        report = update_cluster(client, name, V2, timeout=60)
        if not report.ok:
            raise RuntimeError(str(report))
        changed = time.monotonic()
        figures["skew_ms"] = report.skew * 1e3
        figures["apply_ms"] = statistics.median(
            r.seconds for r in report.results if r.step == "apply") * 1e3
        figures["targets"] = len(report.switch_times())
    elif peer == "upload_file":
        path = directory / "upload" / f"{name}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(V2)
        client.upload_file(str(path))
        changed = time.monotonic()
        figures["skew_ms"] = spread(list(client.run(module.loaded_at).values())) * 1e3
    else:
        (directory / f"{name}.py").write_text(V2)
        client.restart(timeout=RESTART_TIMEOUT, wait_for_workers=True)
        data = client.map(module.make, range(4 * workers), pure=False)
        distributed.wait(data, timeout=WAIT)
        changed = time.monotonic()
        figures["skew_ms"] = spread(list(client.run(module.loaded_at).values())) * 1e3
    figures["wall_s"] = changed - began
    stream.wait_ended(4 * workers)
    stream.stop()
    figures["failed"], figures["tasks"], figures["stale"] = stream.outcome(changed)
    figures["data_kept"] = all(f.status == "finished" for f in before) and \
        client.who_has(before) == holders and \
        client.gather(client.map(module.token_of, before, pure=False)) == tokens
    labels = client.gather(client.map(module.label_of, data, pure=False))
    figures["objects_new"] = labels.count("v2")
    figures["objects"] = len(labels)
    if peer == "pymoult":
        started = time.monotonic()
        undone = undo_cluster(client, name)
        if not undone.ok:
            raise RuntimeError(str(undone))
        figures["undo_s"] = time.monotonic() - started
    client.cancel(data)
    return figures


def bench(workers, repeats, directory):
    names = {(peer, r): module_for(directory, peer, r) for peer in PEERS for r in range(repeats)}
    sys.path.insert(0, str(directory))
    started = time.monotonic()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address="127.0.0.1:0",
                                       silence_logs=logging.CRITICAL)  # restarts log tracebacks
    client = distributed.Client(cluster)
    runs = {peer: [] for peer in PEERS}
    try:
        client.wait_for_workers(workers, timeout=WAIT)
        cluster_start = time.monotonic() - started
        order = [(repeat, peer) for repeat in range(repeats) for peer in PEERS]
        for index, (repeat, peer) in enumerate(order):
            try:
                runs[peer].append(one_change(client, directory, peer, names[peer, repeat],
                                             workers))
            except Exception as exc:  # recorded and shown; the next run waits for workers
                print(f"  {workers} workers, {peer}, repeat {repeat + 1}: failed: "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
                runs[peer].append({"error": f"{type(exc).__name__}: {exc}"})
                if index + 1 == len(order):
                    break
                try:
                    client.wait_for_workers(workers, timeout=RESTART_TIMEOUT)
                except Exception as lost:  # the cluster is gone: its remaining runs too
                    print(f"  {workers} workers: the cluster did not recover "
                          f"({type(lost).__name__}); its remaining runs are not made",
                          flush=True)
                    for _, other in order[index + 1:]:
                        runs[other].append({"error": "not made: the cluster did not recover "
                                                     f"from {peer}, repeat {repeat + 1}"})
                    break
    finally:
        client.close()
        cluster.close()
        sys.path.remove(str(directory))
    row = {"workers": workers, "cluster_start_s": cluster_start,
           "seconds": time.monotonic() - started}
    for peer, all_runs in runs.items():
        figures = [f for f in all_runs if "error" not in f]
        medians = {"failed_runs": len(all_runs) - len(figures)}
        for key in (figures[0] if figures else {}):
            values = [f[key] for f in figures if f.get(key) is not None]
            if key == "data_kept":
                medians[key] = all(values)
            elif values:
                medians[key] = statistics.median(values)
        medians["runs"] = all_runs
        row[peer] = medians
    return row


def show(rows, repeats, seconds):
    print(f"\nPymoult Dask benchmark, Python {sys.version.split()[0]}, distributed "
          f"{distributed.__version__}, {os.cpu_count()} CPUs; medians of {repeats} repeats; "
          f"data: 4 objects per worker ({MAKE_COST * 1e3:.0f} ms each to make); stream: 2 "
          f"tasks per worker in flight; run time {seconds:.0f} s")
    header = (f"  {'workers':>7} {'peer':<12} {'wall s':>7} {'apply ms':>9} {'skew ms':>8} "
              f"{'failed/tasks':>13} {'stale':>6} {'data kept':>10} {'objects new':>12} "
              f"{'undo s':>7}")
    print(header)
    for row in rows:
        for peer in PEERS:
            f = row[peer]
            if "wall_s" not in f:
                print(f"  {row['workers']:>7} {peer:<12} every run failed (see above)")
                continue
            apply = f"{f['apply_ms']:.1f}" if "apply_ms" in f else "-"
            skew = f"{f['skew_ms']:.1f}" if f.get("skew_ms") is not None else "-"
            undo = f"{f['undo_s']:.2f}" if "undo_s" in f else "-"
            failed = f"{f['failed']:.0f}/{f['tasks']:.0f}"
            objects = f"{f['objects_new']:.0f}/{f['objects']:.0f}"
            kept = "yes" if f["data_kept"] else "no"
            runs = f" ({f['failed_runs']} of {len(f['runs'])} runs failed)" \
                if f["failed_runs"] else ""
            print(f"  {row['workers']:>7} {peer:<12} {f['wall_s']:7.2f} {apply:>9} {skew:>8} "
                  f"{failed:>13} {f['stale']:6.0f} {kept:>10} {objects:>12} {undo:>7}{runs}")


def main():
    parser = argparse.ArgumentParser(description="Pymoult Dask cluster update benchmark")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 and 4 workers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=lambda text: tuple(int(n) for n in text.split(",")),
                        help="cluster sizes, comma-separated (default 2,4,8; --quick: 2,4)")
    parser.add_argument("--json", default=str(RESULTS / "dask.json"))
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    sizes = args.sizes or (SIZES[:2] if args.quick else SIZES)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pymoult-bench-dask-") as work, \
            dask.config.set({"distributed.deploy.lost-worker-timeout": LOST_WORKER_TIMEOUT}):
        for workers in sizes:
            directory = pathlib.Path(work) / f"w{workers}"
            directory.mkdir()
            rows.append(bench(workers, repeats, directory))
            print(f"  {workers} workers: {rows[-1]['seconds']:.0f} s", flush=True)
    seconds = time.monotonic() - started
    load = (load_before, os.getloadavg()[0])
    show(rows, repeats, seconds)
    print(f"  load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}")
    write_json({"by_workers": {str(r["workers"]): r for r in rows}, "repeats": repeats,
                "load_average": load,
                "seconds": seconds, "distributed": distributed.__version__,
                "make_cost": MAKE_COST, "work_cost": WORK_COST}, args.json)


if __name__ == "__main__":
    main()
