"""Waiting, bounded, for a state that no event announces (a thread blocked in a given frame, a
count reached): the tests' one polling helper."""

import threading
import time

WAIT = 10.0


def wait_until(predicate, timeout=WAIT):
    """Poll ``predicate`` every millisecond until it is true (True) or ``timeout`` seconds have
    passed (False)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.001)
    return True
