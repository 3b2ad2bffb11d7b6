import threading

import pytest

from pymoult.errors import PymoultValueError
from pymoult.lowlevel.world import SAFETY_MARGIN, stop_the_world

pytestmark = pytest.mark.timeout(60)


def busy_threads(spawn, count):
    counters = [0] * count
    running = threading.Barrier(count + 1, timeout=5)

    def busy(i):
        running.wait()
        while not spawn.stop.is_set():
            counters[i] += 1

    for i in range(count):
        spawn(threading.Thread(target=busy, args=(i,)))
    running.wait()
    return counters


def test_no_other_thread_runs_inside_an_exclusive_window(spawn):
    counters = busy_threads(spawn, 3)
    checked = 0
    for _ in range(400):  # on a loaded machine some windows overrun: count those that held
        if checked >= 20:
            break
        with stop_the_world(guarantee=0.005) as window:
            before = list(counters)
            while window.remaining() > 0.002:  # pure Python work, most of the window
                pass
            after = list(counters)
            still = window.still_exclusive()
        if still and window.exclusive:
            checked += 1
            assert after == before, "another thread ran inside an exclusive window"
    assert checked >= 20


def test_overrunning_window_is_reported_not_trusted(spawn, caplog):
    counters = busy_threads(spawn, 1)
    with stop_the_world(guarantee=0.001) as window:
        start = counters[0]
        while counters[0] == start:  # only possible if the busy thread runs again
            pass
    assert window.exclusive is False
    assert "over its 1.00 ms guarantee" in caplog.text
    assert "overran" in repr(window)


def test_window_restores_the_switch_interval_and_nests():
    import sys

    before = sys.getswitchinterval()
    with stop_the_world(0.02) as outer:
        assert sys.getswitchinterval() == 0.02
        with stop_the_world(0.5) as inner:
            assert inner is outer
        assert sys.getswitchinterval() == 0.02
    assert sys.getswitchinterval() == before
    assert outer.exclusive and outer.elapsed < SAFETY_MARGIN * 0.02
    with pytest.raises(ZeroDivisionError):
        with stop_the_world():
            1 / 0
    assert sys.getswitchinterval() == before


def test_a_nested_window_answers_for_the_outer_one_it_joined():
    window = stop_the_world(0.5)
    with stop_the_world(0.02) as outer:
        with window:  # nested: entering it returns the outer window, but callers may keep `window`
            assert window.still_exclusive() is outer.still_exclusive() is True
            assert window.remaining() <= SAFETY_MARGIN * 0.02


def test_a_window_never_entered_cannot_say_whether_it_is_exclusive():
    from pymoult.errors import ThreadStateError

    window = stop_the_world()
    with pytest.raises(ThreadStateError, match=r"was never entered: use it in a with statement$"):
        window.still_exclusive()
    with pytest.raises(ThreadStateError, match="was never entered"):
        window.remaining()


@pytest.mark.parametrize("bad", [0, -1, 2.0, "fast", None])
def test_guarantee_must_be_sane(bad):
    with pytest.raises(PymoultValueError, match="guarantee must be between"):
        stop_the_world(bad)


def test_free_threaded_builds_are_refused(monkeypatch):
    from pymoult.errors import UnsupportedError
    from pymoult.lowlevel import world

    monkeypatch.setattr(world, "_gil_enabled", lambda: False)
    with pytest.raises(UnsupportedError, match="needs the GIL"):
        with stop_the_world():
            pass
