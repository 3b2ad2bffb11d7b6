"""A Dask cluster holding data in memory, its tasks' code updated live (needs distributed).

    pymoult run examples/task_cluster/app.py [--workers N] [--interval SECONDS]
    pymoult push examples/task_cluster/update.py --wait --to ADDRESS
    pymoult demo task_cluster    # all in one command: start, push, show the change, Ctrl-C

The application starts a ``distributed.LocalCluster`` of worker processes, loads eight sensor
readings once (``jobs.load``: the expensive step, whose results the workers keep in memory) and
then, each round, scores every reading with a task (``jobs.score``) and prints the scores, how
many times readings were loaded, and the workers' processes. ``update.py`` gives every worker
(and this process, the scheduler's) the next release of ``jobs`` (``jobs_v2.py``: the median
instead of the mean) with ``pymoult.delivery.dask_cluster.update_cluster``: the readings stay in
memory, nothing is loaded again, the workers are the same processes, and the next round's tasks
run the new code. Ctrl-C closes the cluster.
"""

import argparse
import sys
import threading
import time

import jobs

client = None  # the cluster's client, for the update script
ready = threading.Event()  # set once the readings are in memory


def say(line):
    """Print ``line`` in one write: the update script prints from another thread, and
    ``print`` writes the text and its newline separately, so two lines could mix."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    global client
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description="score readings on a Dask cluster until Ctrl-C")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds per round")
    options = parser.parse_args()
    cluster = LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                           dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    readings = client.map(jobs.load, range(8))  # loaded once, then held by the workers
    rounds = 0
    try:
        while True:
            rounds += 1
            scores = client.gather(client.map(jobs.score, readings, pure=False))
            loaded = sum(client.run(jobs.loads).values())
            pids = sorted(client.run(lambda: __import__("os").getpid()).values())
            say(f"round {rounds}: reading 0 scores {scores[0]}; {len(readings)} readings in "
                f"memory, loaded {loaded} times; workers {pids}")
            ready.set()
            time.sleep(options.interval)
    except KeyboardInterrupt:
        say(f"stopped after {rounds} rounds")
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
