"""The Dask cluster tests (``tests/test_dask_cluster_update.py``), run in a pytest process of
their own: their LocalCluster's scheduler runs in the test process, and after them, on CPython
3.12, later tests in that process ran many times slower (a ``gc.get_referrers`` call of
``test_redirection.py`` went from milliseconds to over 80 s). Not understood yet; a
process of their own keeps the rest of the suite as it is without them."""

import pathlib
import subprocess
import sys

import pytest

from app_process import command_env

DASK_TESTS = pathlib.Path(__file__).with_name("test_dask_cluster_update.py")


@pytest.mark.timeout(900)
def test_the_dask_cluster_tests_pass_in_a_process_of_their_own():
    pytest.importorskip("distributed")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", str(DASK_TESTS)],
        capture_output=True, text=True, env=command_env(PYMOULT_DASK_TESTS="1"), timeout=850,
        cwd=DASK_TESTS.parent.parent)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " skipped" not in result.stdout.splitlines()[-1]
