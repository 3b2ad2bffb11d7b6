"""End-to-end: each example of ``examples/`` started with ``pymoult run``, updated with
``pymoult push --wait``, and checked for the change it promises and the state it keeps."""

import re

import pytest

from app_process import pymoult
from example_app import start

pytestmark = pytest.mark.timeout(60)


def numbers(lines, pattern):
    """The integers captured by ``pattern`` in each line."""
    return [int(re.search(pattern, line).group(1)) for line in lines]


def assert_stopped_after(app, pattern, printed):
    """The app's last line, printed when Ctrl-C stopped it, counts the ``printed`` lines.
    Ctrl-C may land between the increment of the count and the print of its line: a count
    one higher is as good."""
    count = int(re.fullmatch(pattern, app.stdout.lines[-1]).group(1))
    assert count in (printed, printed + 1), (count, printed)


def test_hello_greets_from_the_new_version_with_its_counter(request):
    app = start(request, "hello", "--interval", "0.02")
    app.stdout.wait_for(lambda line: "version 1" in line, count=3)
    assert "update 'redefine greet': applied" in app.push()
    app.stdout.wait_for(lambda line: "version 2" in line, count=3)
    assert app.stop() == 0
    greetings = app.lines("hello #")
    versions = ["version 2" in line for line in greetings]
    assert versions == sorted(versions)  # one switch, from 1 to 2, never back
    assert numbers(greetings, r"#(\d+)") == list(range(1, len(greetings) + 1))
    assert_stopped_after(app, r"stopped after (\d+) greetings", len(greetings))


def test_tictac_never_prints_a_mixed_pair(request):
    app = start(request, "tictac", "--interval", "0.004")
    app.stdout.wait_for(lambda line: line.endswith("tic-tac"), count=20)
    assert "update 'tic/tac v2': applied" in app.push()
    app.stdout.wait_for(lambda line: line.endswith("TIC-TAC"), count=20)
    assert app.stop() == 0
    pairs = app.lines("pair ")
    kinds = [line.split(": ")[1] for line in pairs]
    assert set(kinds) == {"tic-tac", "TIC-TAC"}, "a mixed pair was printed"
    assert kinds == sorted(kinds, key=lambda kind: kind == "TIC-TAC")  # all old, then all new
    assert numbers(pairs, r"pair (\d+)") == list(range(1, len(pairs) + 1))
