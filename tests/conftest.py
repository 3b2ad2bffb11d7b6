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


@pytest.fixture
def point_looper(spawn):
    """``point_looper()`` starts a DSU_Thread that loops over update points until the test ends
    and returns it once it runs."""
    from pymoult.lowlevel.alterability import staticUpdatePoint
    from pymoult.threads import DSU_Thread

    def start():
        started = threading.Event()

        def main():
            started.set()
            while not spawn.stop.is_set():
                staticUpdatePoint()

        thread = spawn(DSU_Thread(target=main))
        assert started.wait(JOIN_TIMEOUT)
        return thread

    return start


@pytest.fixture
def manager():
    """A started ThreadedManager, stopped (and checked stopped) at teardown."""
    from pymoult.highlevel.managers import ThreadedManager

    manager = ThreadedManager().start()
    yield manager
    assert manager.stop(JOIN_TIMEOUT)
