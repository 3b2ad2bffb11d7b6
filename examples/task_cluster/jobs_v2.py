"""What the cluster's tasks run: sensor readings, loaded once, then scored.

``jobs.py`` is the release the application starts with, ``jobs_v2.py`` the next one, which
``update.py`` applies to every worker of the running cluster.
"""

import os
import random

VERSION = "v2"
LOADS = 0  # readings loaded by this process: module state, kept by the update


class Reading:
    """One sensor's values, loaded once and then held in a worker's memory."""

    def __init__(self, sensor, values):
        self.sensor = sensor
        self.values = values
        self.loaded_by = os.getpid()


def load(sensor):
    """The expensive step: its results are what the cluster keeps in memory."""
    global LOADS
    LOADS += 1
    generator = random.Random(sensor)
    return Reading(sensor, [generator.uniform(0, 10) for _ in range(1000)])


def loads():
    return LOADS


def score(reading):
    ordered = sorted(reading.values)
    middle = len(ordered) // 2
    median = (ordered[middle - 1] + ordered[middle]) / 2
    return f"{median:.2f} (median, jobs v2)"
