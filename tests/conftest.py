import faulthandler
import os
import sys
import threading

import pytest

import modules

from pymoult.lowlevel.alterability import resumeSuspendedThreads

JOIN_TIMEOUT = 5.0

#: Seconds a test may outlive its pytest-timeout limit before the hang watchdog ends the whole run.
HANG_GRACE = 60.0


# -- the hang watchdog ----------------------------------------------------------------------------
#
# pytest-timeout cannot end every hang. Its "signal" method runs a Python handler in the main
# thread and its "thread" method a Python thread: both need the GIL. A C-level deadlock in which a
# thread blocks while holding the GIL (CPython 3.11's sys._current_frames() deadlock, gh-106883, see
# pymoult._cpython) leaves them waiting forever, and CI with them. faulthandler's watchdog is a C
# thread: once a test has outlived its pytest-timeout limit by HANG_GRACE seconds it prints every
# thread's stack to stderr and ends the process with exit status 1.


def pytest_addoption(parser):
    parser.addini("hang_watchdog_grace", "seconds a test may outlive its timeout before the hang "
                  "watchdog prints all stacks and ends the run (default %g)" % HANG_GRACE)


_stderr_fd = pytest.StashKey[int]()


def pytest_configure(config):
    # The terminal's stderr, kept now: while a test runs, fd 2 is pytest's capture file, which
    # nobody reads once the process has ended.
    config.stash[_stderr_fd] = os.dup(sys.stderr.fileno())


def pytest_unconfigure(config):
    fd = config.stash.get(_stderr_fd, None)
    if fd is not None:
        faulthandler.cancel_dump_traceback_later()
        os.close(fd)


def _timeout_of(item):
    """pytest-timeout's limit for *item* in seconds, or None (marker, then --timeout, then ini)."""
    if not item.config.pluginmanager.hasplugin("timeout"):
        return None
    marker = item.get_closest_marker("timeout")
    value = None
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    if value is None:
        value = item.config.getoption("timeout", None)
    if value is None:
        value = item.config.getini("timeout") or None
    return float(value) if value is not None and float(value) > 0 else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item):
    limit = _timeout_of(item)
    if limit is not None:
        grace = float(item.config.getini("hang_watchdog_grace") or HANG_GRACE)
        faulthandler.dump_traceback_later(limit + grace, exit=True,
                                          file=item.config.stash[_stderr_fd])
    try:
        yield
    finally:
        if limit is not None:
            faulthandler.cancel_dump_traceback_later()


# -- fixtures -------------------------------------------------------------------------------------


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


@pytest.fixture(params=modules.FLOWS)
def flow(request, monkeypatch):
    """How ``modules.update_to`` hands a new version to Pymoult (see ``modules.FLOWS``)."""
    monkeypatch.setattr(modules, "FLOW", request.param)
    return request.param
