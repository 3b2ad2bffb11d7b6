import threading

import pytest

from pymoult.lowlevel.alterability import resumeSuspendedThreads

JOIN_TIMEOUT = 5.0


@pytest.fixture
def spawn():
    """Start threads for a test and make sure none outlives it.

    ``spawn(thread)`` starts and returns it. At teardown the fixture sets ``stop`` (an Event the
    test's loops watch), releases every parked thread and joins all of them; a thread still alive
    after that fails the test.
    """
    started = []

    def start(thread):
        thread.daemon = True
        thread.start()
        started.append(thread)
        return thread

    start.stop = threading.Event()
    yield start
    start.stop.set()
    resumeSuspendedThreads()
    for thread in started:
        thread.join(JOIN_TIMEOUT)
    leaked = [t for t in started if t.is_alive()]
    assert not leaked, f"threads still alive after the test: {leaked}"
