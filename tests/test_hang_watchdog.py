"""The hang watchdog of conftest.py ends a run that pytest-timeout cannot (a thread blocked while
holding the GIL), with every thread's stack on stderr and exit status 1."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent

HUNG_TEST = '''
import ctypes

import pytest


@pytest.mark.timeout(0.5)
def test_blocks_holding_the_gil():
    api = ctypes.pythonapi  # a PyDLL: its calls keep the GIL
    api.PyThread_allocate_lock.restype = ctypes.c_void_p
    api.PyThread_acquire_lock.argtypes = (ctypes.c_void_p, ctypes.c_int)
    lock = api.PyThread_allocate_lock()
    api.PyThread_acquire_lock(lock, 1)
    api.PyThread_acquire_lock(lock, 1)  # never returns; signals do not interrupt it


def test_never_reached():
    pass
'''


@pytest.mark.timeout(60)
def test_watchdog_ends_a_run_hung_with_the_gil_held(tmp_path):
    (tmp_path / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (tmp_path / "test_hung.py").write_text(HUNG_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 30\nhang_watchdog_grace = 1\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent)] + sys.path))
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                               "test_hung.py"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired as exc:  # the watchdog did not fire: the child was killed
        pytest.fail(f"the hung run was not ended: {exc.stderr!r}")
    elapsed = time.monotonic() - start
    assert done.returncode == 1
    assert "Timeout (0:00:01" in done.stderr  # 0.5 s of the marker + 1 s of grace
    assert "in test_blocks_holding_the_gil" in done.stderr  # the stack of the hung thread
    assert " passed" not in done.stdout and " failed" not in done.stdout  # ended there, no summary
    assert elapsed >= 1.5
