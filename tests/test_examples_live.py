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


def test_data_converts_every_existing_account_at_once(request):
    app = start(request, "data", "--interval", "0.01")
    app.stdout.wait_for(lambda line: line.startswith("round 5:"))
    assert "update 'accounts get a currency': applied" in app.push()
    converted = app.stdout.wait_for(lambda line: "EUR" in line, count=8)  # one opens a client
    assert app.stop() == 0
    rounds = app.lines("round ")
    first = rounds.index(converted[0])
    before, after = rounds[:first], rounds[first:]
    assert before and not any("EUR" in line for line in before)
    for line in after:  # every account, old or opened since, has the field
        accounts = line.split(": ")[1].split(", ")
        assert all(account.endswith(" EUR") for account in accounts), line
    # balances were kept: alice started at 100 and earns 1 a round, across the update
    assert numbers(rounds, r"alice (\d+)") == [100 + n for n in range(1, len(rounds) + 1)]
    assert len(after[-1].split(", ")) > len(after[0].split(", "))  # opened after the update


def test_lazy_converts_each_record_on_its_first_access(request):
    app = start(request, "lazy", "--interval", "0.005", "--batch", "1000")
    app.stdout.wait_for(lambda line: line.startswith("round 3:"))
    assert "update 'records get a label, lazily': applied" in app.push()
    # ten rounds of 1,000 touch the whole pool: then every record has been converted
    app.stdout.wait_for(lambda line: line.endswith("converted 10000"))
    assert app.stop() == 0
    rounds = app.lines("round ")
    first = next(i for i, line in enumerate(rounds) if "(r" in line)
    assert not any("(r" in line for line in rounds[:first])
    counts = numbers(rounds[first:], r"converted (\d+)$")
    # each line counts the records touched since the update: one batch more per round, the
    # records of the batch being printed are converted as they are shown
    assert counts[:10] == [1000 * n for n in range(1, 11)], counts
    assert all(count == 10000 for count in counts[10:])  # never converted twice
    assert app.stdout.lines[-1].endswith("converted 10000")


def test_reboot_runs_the_new_main_in_the_same_thread(request):
    app = start(request, "reboot", "--interval", "0.01")
    first = app.stdout.wait_for(lambda line: line.startswith("v1 tick"), count=3)[0]
    assert "update 'worker v2': applied" in app.push()
    app.stdout.wait_for(lambda line: line.startswith("v2 tick"), count=3)
    assert app.stop() == 0
    ticks = app.lines("v1 tick") + app.lines("v2 tick")
    assert numbers(ticks, r"tick (\d+)") == list(range(1, len(ticks) + 1))  # count went on
    ident = re.search(r"\((\d+)\)", first).group(1)
    assert all(f"in worker ({ident})" in line for line in ticks)  # one thread throughout
    assert all(line.endswith("reboots 0") for line in app.lines("v1 tick"))
    assert all(line.endswith("reboots 1") for line in app.lines("v2 tick"))
    output = app.stdout.lines
    assert output.index("v1 main left") < output.index(app.lines("v2 tick")[0])
    assert output[-1] == f"stopped after {len(ticks)} ticks and 1 reboot(s)"


def test_reader_and_writer_change_format_together(request):
    app = start(request, "reader_writer", "--interval", "0.004")
    app.stdout.wait_for(lambda line: line.endswith(" C"), count=10)
    assert "update 'readings as dicts': applied" in app.push()
    app.stdout.wait_for(lambda line: line.endswith(" F"), count=10)
    assert app.stop() == 0
    readings = app.lines("reading #")
    assert not app.lines("MISMATCH")
    new = ["F" in line for line in readings]
    assert new == sorted(new)  # all old-format readings, then all new ones
    seqs = numbers(readings, r"#(\d+)")
    assert seqs == sorted(set(seqs))  # the writer's count went on through the update
    assert re.fullmatch(r"stopped: \d+ decoded, 0 mismatched", app.stdout.lines[-1])


WRITER_ONLY = """
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import SafeRedefineUpdate

def encode(seq):
    return {"seq": seq}

app = sys.modules["__main__"]
fetch_manager("runtime").add_update(
    SafeRedefineUpdate(app, "encode", encode, threads=[app.writer], timeout=10))
"""


def test_reader_writer_detects_a_writer_updated_alone(request):
    # the check the test above relies on: half the update is seen at once
    app = start(request, "reader_writer", "--interval", "0.004")
    app.stdout.wait_for(lambda line: line.endswith(" C"), count=3)
    pushed = pymoult("push", "-", "--wait", "--to", app.address, stdin=WRITER_ONLY)
    assert pushed.returncode == 0, pushed.stdout
    app.stdout.wait_for(lambda line: line.startswith("MISMATCH"))
    assert app.stop() == 0
    assert re.fullmatch(r"stopped: \d+ decoded, [1-9]\d* mismatched", app.stdout.lines[-1])


def test_local_variables_are_written_while_the_function_sleeps(request):
    app = start(request, "local_var", "--interval", "1")
    app.stdout.wait_for(lambda line: line.startswith("tick 1 "))
    assert "update 'watch settings': applied" in app.push()
    app.stdout.wait_for(lambda line: "(v2)" in line, count=3)
    assert app.stop() == 0
    # the function has no update point: the writes landed while it slept (where it spends its
    # time), and the same frame went on with the new values, its own count intact
    ticks = app.lines("tick ")
    first_new = next(i for i, line in enumerate(ticks) if "(v2)" in line)
    assert first_new >= 1
    assert ticks == [f"tick {n} (v1), next in 1.0 s" for n in range(1, first_new + 1)] + \
        [f"tick {n} (v2), next in 0.1 s" for n in range(first_new + 1, len(ticks) + 1)]
    assert_stopped_after(app, r"stopped after (\d+) ticks", len(ticks))
