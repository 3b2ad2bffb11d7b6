import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.timeout(30)
def test_hello_live_update_runs_both_versions_in_one_process():
    result = subprocess.run([sys.executable, str(EXAMPLES / "hello_live_update.py"),
                             "--interval", "0.005"],
                            capture_output=True, text=True, timeout=25)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    update = next(i for i, line in enumerate(lines) if line.startswith("-- update:"))
    before, after = lines[:update], lines[update + 1:-1]
    assert "parked at 'after greeting'" in lines[update]
    assert len(before) >= 3 and all("version 1" in line for line in before)
    assert len(after) >= 3 and all("version 2" in line for line in after)
    numbers = [int(line.split("#")[1].split()[0]) for line in before + after]
    assert numbers == list(range(1, len(numbers) + 1))  # state kept: the count goes on
    assert lines[-1].startswith("-- done")
    assert result.stderr == ""
