"""A stop-the-world window: a short critical section during which no other Python thread runs.

Mechanism (CPython with a GIL)
------------------------------
A thread that holds the GIL and runs pure Python keeps it until another thread, after waiting one
switch interval (``sys.setswitchinterval``) without seeing any switch, sets a drop request. So the
window sets the switch interval to ``guarantee`` seconds and then lets another thread hold the GIL
once before taking it back (``_cpython.take_gil_afresh``). Every thread that was already waiting
then sees that a switch happened and does not ask for the GIL; every wait that starts afterwards
lasts at least ``guarantee``. Until ``guarantee`` has elapsed since that fresh acquisition, no
other thread can run Python code, whatever the number of busy threads.

Measured on 3.10-3.13 with three busy threads (see ``tests/test_world.py`` and ``benchmarks/``):
no other thread ran in any window that ended within 0.9 x ``guarantee``; windows that overran it
(the VM descheduled the holder, or the section was too long) could be interleaved. So the window
does not promise; it *measures*: :meth:`Window.still_exclusive` says whether the guarantee still
holds (check it just before committing), and ``window.exclusive`` tells afterwards whether it held
throughout. A window that overran is logged as a warning.

Entering costs up to one ``guarantee`` per busy thread (each runs out its slice first).

What must not be done inside: anything that blocks or releases the GIL (I/O, ``sleep``, waiting on
a lock, event or another thread, logging to a file or socket, ``subprocess``); then other threads
run. Keep the section short: checks and in-memory swaps. Threads blocked in C calls stay blocked;
when their call returns they wait for the GIL like everyone else.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import Literal

from .. import _cpython
from ..errors import PymoultValueError, ThreadStateError, UnsupportedError

__all__ = ["stop_the_world", "Window", "DEFAULT_GUARANTEE", "SAFETY_MARGIN"]

logger = logging.getLogger("pymoult")

DEFAULT_GUARANTEE = 0.01
#: Fraction of ``guarantee`` within which exclusion is trusted (clock and wake-up slack).
SAFETY_MARGIN = 0.9

_window_lock = threading.RLock()


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)  # 3.13+
    return True if check is None else bool(check())


_local = threading.local()


class Window:
    """A stop-the-world window; use it as a context manager (see :func:`stop_the_world`)."""

    def __init__(self, guarantee: float = DEFAULT_GUARANTEE) -> None:
        if not (isinstance(guarantee, (int, float)) and 0.0005 <= guarantee <= 1.0):
            raise PymoultValueError(f"guarantee must be between 0.0005 and 1 second, "
                                    f"got {guarantee!r}")
        self.guarantee = float(guarantee)
        self.entry_latency: float | None = None  # seconds spent getting the GIL back
        self.elapsed: float | None = None  # seconds between the fresh acquisition and the exit
        self.exclusive: bool | None = None  # True if the guarantee held until exit
        self._started: float | None = None
        self._saved_interval = 0.0
        self._outer: Window | None = None

    def __enter__(self) -> Window:
        if not _gil_enabled():
            raise UnsupportedError("stop_the_world needs the GIL; this is a free-threaded build "
                                   "of CPython (run it with PYTHON_GIL=1)")
        outer = getattr(_local, "window", None)
        if outer is not None:  # nested in this thread: the outer window already excludes others
            self._outer = outer
            return outer
        _window_lock.acquire()
        self._saved_interval = sys.getswitchinterval()
        _cpython.set_switch_interval(self.guarantee)
        begin = time.perf_counter()
        _cpython.take_gil_afresh()  # void every GIL wait begun before this point
        self._started = time.perf_counter()
        self.entry_latency = self._started - begin
        _local.window = self
        return self

    def _measure(self) -> tuple[float, float]:
        """Seconds since the fresh acquisition, and the guarantee, of the window in effect: this
        one, or the outer one it was nested in."""
        window = self if self._outer is None else self._outer
        if window._started is None:
            raise ThreadStateError(f"{self!r} was never entered: use it in a with statement")
        return time.perf_counter() - window._started, window.guarantee

    def still_exclusive(self) -> bool:
        """True while the exclusion guarantee still holds (no other thread can have run)."""
        started = self._started
        if started is None:  # nested in an outer window (or never entered)
            elapsed, guarantee = self._measure()
            return elapsed < SAFETY_MARGIN * guarantee
        return time.perf_counter() - started < SAFETY_MARGIN * self.guarantee

    def remaining(self) -> float:
        """Seconds of guaranteed exclusion left (negative once it has run out)."""
        started = self._started
        if started is None:  # nested in an outer window (or never entered)
            elapsed, guarantee = self._measure()
            return SAFETY_MARGIN * guarantee - elapsed
        return SAFETY_MARGIN * self.guarantee - (time.perf_counter() - started)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> Literal[False]:
        if self._outer is not None:
            return False
        self.elapsed, _ = self._measure()
        self.exclusive = self.elapsed < SAFETY_MARGIN * self.guarantee
        _cpython.set_switch_interval(self._saved_interval)
        _local.window = None
        _window_lock.release()
        if not self.exclusive:
            logger.warning("stop-the-world window lasted %.2f ms, over its %.2f ms guarantee: "
                           "other threads may have run", self.elapsed * 1e3, self.guarantee * 1e3)
        return False

    def __repr__(self) -> str:
        if self.exclusive is None:
            state = "open" if self._started is not None else "not entered"
        else:
            state = "exclusive" if self.exclusive else "overran"
        return f"<Window guarantee={self.guarantee * 1e3:.1f}ms {state}>"


def stop_the_world(guarantee: float = DEFAULT_GUARANTEE) -> Window:
    """A context manager during which no other Python thread runs, for up to ``guarantee`` s.

    ``with stop_the_world() as window: ...`` — check ``window.still_exclusive()`` before
    committing anything that must not be seen half-done; ``window.exclusive`` afterwards. Nested
    use in one thread reuses the outer window; windows of different threads are serialised.
    """
    return Window(guarantee)
