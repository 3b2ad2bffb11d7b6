"""Issue 13, "Done when": programs and update scripts written for the ORIGINAL Pymoult run
unchanged.

Each program of ``tests/original_programs/<situation>/`` is written in the original's style:
plain ``threading.Thread``s with no update point (unless a reboot needs one), a manager the
program creates itself (``ThreadedManager(name="pymoult", threads=[thread])``, or a polling
``Manager`` it drives), and update scripts that begin with ``#parsed`` and reach the program
through ``sys.modules["__main__"]`` and ``fetch_manager("pymoult")``. Each test runs the
program under ``pymoult run`` (in a process group of its own, killed at the end whatever
happens), pushes the scripts with the real ``pymoult push --wait``, and checks the program's
lines before and after and the outcome the push reports.

Every wait is bounded and waits for a line of output: no sleep synchronises anything.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from app_process import command_env
from pymoult.cli import LISTENING

pytestmark = pytest.mark.timeout(60)

PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "original_programs")
WAIT = 15.0  # seconds any one expected line or outcome may take to come
INTERVAL = "0.05"  # seconds between two turns of the programs' loops


class Output:
    """Both output streams of a process, read line by line as they come; one condition for
    both, so that a wait for a line of stdout ends as soon as stderr shows a thread died."""

    def __init__(self, process):
        self.stdout, self.stderr = [], []
        self.ended = 0  # streams at their end
        self.changed = threading.Condition()
        for stream, lines in ((process.stdout, self.stdout), (process.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    def _read(self, stream, lines):
        for line in stream:
            with self.changed:
                lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended += 1
            self.changed.notify_all()


#: What a program writes to stderr when one of its threads dies of an exception.
THREAD_DIED = "Exception in thread "


class Program:
    """``pymoult run original_programs/<situation>/app.py INTERVAL``, in its own process group."""

    def __init__(self, situation, *options, cwd=None):
        self.directory = os.path.join(PROGRAMS, situation)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pymoult", "run", *options,
             os.path.join(self.directory, "app.py"), INTERVAL],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            env=command_env(), cwd=cwd, start_new_session=True)
        self.output = Output(self.process)
        self.pushes = []
        self.address = None
        if "--no-listen" not in options:
            try:
                line = self.wait_for(lambda line: line.startswith(LISTENING), stderr=True)[0]
            except BaseException:
                self.close()
                raise
            self.address = line[len(LISTENING):]

    def script(self, name):
        return os.path.join(self.directory, name)

    def wait_for(self, predicate, count=1, stderr=False, timeout=WAIT):
        """The first ``count`` lines of stdout (or stderr) matching ``predicate``. An
        AssertionError showing both streams if they do not come within ``timeout``, or at once
        when the program ends or one of its threads dies first."""
        output = self.output
        lines = output.stderr if stderr else output.stdout

        def found():
            return [line for line in lines if predicate(line)]

        def hopeless():
            return output.ended == 2 or any(line.startswith(THREAD_DIED)
                                            for line in output.stderr)

        with output.changed:
            output.changed.wait_for(lambda: len(found()) >= count or hopeless(), timeout)
            matches = found()
        if len(matches) < count:
            raise AssertionError(f"expected {count} matching line(s), got {len(matches)}\n"
                                 f"{self.report()}")
        return matches[:count]

    def wait_line(self, text, count=1):
        return self.wait_for(lambda line: line == text, count)

    def lines(self, stderr=False):
        with self.output.changed:
            return list(self.output.stderr if stderr else self.output.stdout)

    def report(self):
        with self.output.changed:
            return ("--- program stdout (last 40 lines) ---\n"
                    + "\n".join(self.output.stdout[-40:])
                    + "\n--- program stderr ---\n" + "\n".join(self.output.stderr))

    def push(self, name, *options, wait=True):
        """``pymoult push SCRIPT --wait --to ADDRESS``, run to its end."""
        return self.start_push(name, *options, wait=wait).result()

    def start_push(self, name, *options, wait=True, to=None):
        """The same, in the background: ``.result()`` waits for it (bounded)."""
        push = Push(self.script(name), to or self.address, options, wait)
        self.pushes.append(push)
        return push

    def close(self):
        for push in self.pushes:
            push.close()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(WAIT)


class Push:
    """A ``pymoult push`` process (its own process group, killed by ``close``)."""

    def __init__(self, script, address, options, wait):
        command = [sys.executable, "-m", "pymoult", "push", script, "--to", address, *options]
        if wait:
            command += ["--wait", "--timeout", str(WAIT)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=command_env(),
                                        start_new_session=True)
        self._result = None

    def result(self):
        """The finished push: ``returncode``, ``stdout``, ``stderr``."""
        if self._result is None:
            stdout, stderr = self.process.communicate(timeout=WAIT + 10)
            self._result = subprocess.CompletedProcess(self.process.args,
                                                       self.process.returncode, stdout, stderr)
        return self._result

    def close(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(WAIT)


@pytest.fixture
def run():
    """``run(situation, *options)``: a started program, killed at teardown (even on failure).
    Its output is printed then, which pytest shows when the test failed."""
    started = []

    def start(situation, *options, **kwargs):
        program = Program(situation, *options, **kwargs)
        started.append(program)
        return program

    yield start
    for program in started:
        program.close()
        print(program.report())


def applied(push, *names):
    """Assert that ``push`` succeeded and reported each of ``names`` applied."""
    assert push.returncode == 0, f"push failed ({push.returncode}):\n{push.stdout}{push.stderr}"
    for name in names:
        assert f"update {name!r}: applied" in push.stdout.splitlines(), push.stdout
    assert push.stdout.splitlines()[-1] == "ok", push.stdout


def versions(lines, pattern=r"^(v\d) (\d+)$"):
    """(version, n) of every line matching ``pattern``."""
    found = [re.match(pattern, line) for line in lines]
    return [(m.group(1), int(m.group(2))) for m in found if m]


def assert_one_switch(lines, old, new):
    """The program's numbered lines: ``old`` ones, then ``new`` ones, never back; the count
    goes on across the update (the process kept its state)."""
    seen = versions(lines)
    assert seen, lines
    kinds = [version for version, _ in seen]
    assert kinds == sorted(kinds, key=lambda v: v == new) and set(kinds) == {old, new}, kinds
    assert [n for _, n in seen] == list(range(1, len(seen) + 1)), seen


# -- 1. a plain thread, its function redefined (SafeRedefineUpdate), ThreadedManager ------------


def test_plain_thread_function_redefined_through_the_runtime_listener(run):
    program = run("redefine")
    program.wait_for(lambda line: line.startswith("v1 "), count=3)
    applied(program.push("update.py"), "func")
    program.wait_for(lambda line: line.startswith("v2 "), count=3)
    assert_one_switch(program.lines(), "v1", "v2")


def test_plain_thread_function_redefined_through_the_program_own_listener(run):
    # the program's own Listener() (as the original's programs create) serves pushes too
    program = run("redefine")
    own = program.wait_for(lambda line: line.startswith("listener at "))[0]
    address = own[len("listener at "):]
    assert address != program.address
    program.wait_for(lambda line: line.startswith("v1 "), count=3)
    applied(program.start_push("update.py", to=address).result(), "func")
    program.wait_for(lambda line: line.startswith("v2 "), count=3)
    assert_one_switch(program.lines(), "v1", "v2")


def test_new_function_version_uses_the_update_script_names(run):
    program = run("redefine")
    program.wait_for(lambda line: line.startswith("v1 "), count=3)
    applied(program.push("update_names.py"), "func")
    program.wait_for(lambda line: line.startswith("v2 "), count=3)
    assert all(line.endswith(f" every {INTERVAL} s") for line in program.lines()
               if line.startswith("v2 "))


def test_status_and_history_of_the_runtime_listener_show_the_program_manager(run):
    program = run("redefine")
    program.wait_for(lambda line: line.startswith("v1 "), count=3)
    applied(program.push("update.py"), "func")
    reported = {}
    for command in ("status", "history"):
        done = subprocess.run([sys.executable, "-m", "pymoult", command, "--json", "--to",
                               program.address], capture_output=True, text=True,
                              env=command_env(), timeout=WAIT)
        assert done.returncode == 0, done.stdout + done.stderr
        reported[command] = {m["name"]: m for m in json.loads(done.stdout)["managers"]}
    assert "pymoult" in reported["status"], reported["status"].keys()
    records = reported["history"]["pymoult"]["history"]
    assert [(r["name"], r["state"]) for r in records] == [("func", "applied")]


# -- 2. the same with a polling Manager the program drives ---------------------------------------


def test_polling_manager_driven_by_the_program(run):
    program = run("polling")
    program.wait_for(lambda line: line.startswith("v1 "), count=3)
    applied(program.push("update.py"), "func")
    program.wait_for(lambda line: line.startswith("v2 "), count=3)
    assert_one_switch(program.lines(), "v1", "v2")


# -- 3. requirements: "never", and "no" until another update is applied ---------------------------


def test_requirements_never_aborts_and_changes_nothing(run):
    program = run("requirements")
    program.wait_for(lambda line: line.startswith("v1 "), count=3)
    pushed = program.push("never.py")
    assert pushed.returncode == 1, pushed.stdout + pushed.stderr
    assert pushed.stdout.splitlines() == [
        "update 'never': aborted - UpdateAbortedError: 'never': its requirements answered "
        "'never'", "FAILED"], pushed.stdout
    count = len(program.lines())
    program.wait_for(lambda line: line.startswith("v1 "), count=count + 3)  # it goes on, v1
    assert not [line for line in program.lines() if not line.startswith("v1 ")]


@pytest.mark.parametrize("dependent_first", [True, False], ids=["dependent first", "func first"])
def test_requirements_no_postpone_until_the_other_update_is_applied(run, dependent_first):
    program = run("requirements")
    program.wait_for(lambda line: line.startswith("v1 "), count=3)
    if dependent_first:
        dependent = program.start_push("needs_func.py")
        # postponed (at least twice: it is retried while "func" is not there)
        program.wait_for(lambda line: line == "requirements of needs-func: no", count=2,
                         stderr=True)
        func = program.push("func.py")
    else:
        func = program.push("func.py")
        program.wait_for(lambda line: line.startswith("v2 "))
        dependent = program.start_push("needs_func.py")
    applied(func, "func")
    applied(dependent.result(), "needs-func")
    program.wait_for(lambda line: line.startswith("v3 "), count=3)
    lines = program.lines()
    answers = [line.split(": ")[1] for line in program.lines(stderr=True)
               if line.startswith("requirements of")]
    assert answers[-1] == "yes" and set(answers[:-1]) <= {"no"}
    assert bool(answers[:-1]) == dependent_first, answers
    numbered = versions(lines)
    kinds = [version for version, _ in numbered]
    assert kinds == sorted(kinds) and kinds[0] == "v1" and kinds[-1] == "v3", kinds  # v1, v2, v3
    assert [n for _, n in numbered] == list(range(1, len(numbered) + 1))


# -- 4. not alterable at first (its function runs): postponed, applied after the next one --------


def test_update_not_alterable_at_first_is_postponed_and_applied_after_the_next(run):
    program = run("not_alterable")
    program.wait_line("v1 waits for its release")  # the worker stays inside func_v1
    func = program.start_push("update.py")
    program.wait_for(lambda line: line == "func: not alterable yet", stderr=True)  # postponed
    applied(program.push("update2.py"), "release")
    applied(func.result(), "func")
    program.wait_for(lambda line: line.startswith("v2 "), count=3)
    lines = program.lines()
    assert lines.index("v1 released") < lines.index(next(x for x in lines if x.startswith("v2 ")))
    assert_one_switch(lines, "v1", "v2")


# -- 5. eager and lazy conversion of a plain thread's objects -------------------------------------

ROUND = re.compile(r"^round (\d+): item (\d+)(?: label (.*))?$")


def rounds(lines):
    """(round, item, label or None) of each line."""
    found = [ROUND.match(line) for line in lines]
    return [(int(m.group(1)), int(m.group(2)), m.group(3)) for m in found if m]


def split_at_update(shown):
    first = next(i for i, (_, _, label) in enumerate(shown) if label is not None)
    before, after = shown[:first], shown[first:]
    assert before and all(label is None for _, _, label in before)
    assert all(label is not None for _, _, label in after), after
    assert [r for r, _, _ in shown] == list(range(1, len(shown) + 1))  # the loop went on
    assert [item for _, item, _ in shown] == [r % 4 for r in range(len(shown))]
    return before, after


def test_eager_conversion_of_a_plain_thread_objects(run):
    program = run("conversion")
    program.wait_for(lambda line: line.startswith("round "), count=3)
    applied(program.push("update_eager.py"), "eager")
    program.wait_for(lambda line: " label " in line, count=6)  # every item shown once more
    before, after = split_at_update(rounds(program.lines()))
    labels = {label for _, _, label in after}
    # every item was converted at once, in the same round, before any was shown again
    assert len(labels) == 1, labels
    converted_in = int(labels.pop().rsplit(" ", 1)[1])
    assert before[-1][0] <= converted_in <= after[0][0]


def test_lazy_conversion_of_a_plain_thread_objects(run):
    program = run("conversion")
    program.wait_for(lambda line: line.startswith("round "), count=3)
    applied(program.push("update_lazy.py"), "lazy")
    program.wait_for(lambda line: " label " in line, count=8)  # every item shown twice
    before, after = split_at_update(rounds(program.lines()))
    # each item was converted when it was first shown after the update, once
    first_seen = {}
    for round_, item, label in after:
        first_seen.setdefault(item, round_)
        assert label == f"converted in round {first_seen[item]}", (round_, item, label)
    assert len(set(first_seen.values())) == 4


def test_new_class_version_uses_the_update_script_names(run):
    program = run("conversion")
    program.wait_for(lambda line: line.startswith("round "), count=3)
    applied(program.push("update_names.py"), "eager")
    program.wait_for(lambda line: " label " in line, count=6)
    split_at_update(rounds(program.lines()))


# -- 6. forced quiescence, written as in the original's tutorial ----------------------------------


def test_forced_quiescence_as_in_the_tutorial(run):
    program = run("forced_quiescence")
    program.wait_for(lambda line: line.startswith("v1 ends "), count=2)
    applied(program.push("update.py"), "forced")
    program.wait_for(lambda line: line.startswith("v2 ends "), count=2)
    calls = [re.match(r"^(v\d) (begins|ends) (\d+)$", line).groups()
             for line in program.lines()]
    # every call ran one version from its beginning to its end: v1 calls, then v2 calls
    for begins, ends in zip(calls[0::2], calls[1::2]):
        assert (begins[1], ends[1]) == ("begins", "ends") and begins[0::2] == ends[0::2], \
            (begins, ends)
    assert [int(n) for _, _, n in calls[0::2]] == list(range(1, len(calls[0::2]) + 1))
    kinds = [v for v, _, _ in calls]
    assert kinds == sorted(kinds)


# -- 7. reboots and local variables -------------------------------------------------------------


def test_rebooted_function_continues_with_its_captured_state(run):
    program = run("reboot_function")
    program.wait_for(lambda line: line.startswith("v1 n="), count=3)
    applied(program.push("update.py"), "reboot count")
    program.wait_for(lambda line: line.startswith("v2 n="), count=3)
    lines = program.lines()
    counted = [re.match(r"^(v\d) n=(\d+) total=(\d+)$", line) for line in lines]
    counted = [(m.group(1), int(m.group(2)), int(m.group(3))) for m in counted if m]
    assert [n for _, n, _ in counted] == list(range(1, len(counted) + 1))
    assert all(total == n * (n + 1) // 2 for _, n, total in counted)
    kinds = [v for v, _, _ in counted]
    assert kinds == sorted(kinds)
    last_v1 = [c for c in counted if c[0] == "v1"][-1]
    assert f"v2 starts from n={last_v1[1]} total={last_v1[2]}" in lines


def test_local_variables_of_sleeping_frames_are_written(run):
    program = run("local_var")
    for name in ("watcher1", "watcher2"):
        program.wait_for(lambda line: line.startswith(f"{name} tick ") and line.endswith("v1"),
                         count=2)
    applied(program.push("update.py"), "label")
    for name in ("watcher1", "watcher2"):
        program.wait_for(lambda line: line.startswith(f"{name} tick ") and line.endswith("v2"),
                         count=2)
        ticks = [line.split()[2:] for line in program.lines() if line.startswith(f"{name} ")]
        # the same frame went on: its own count, v1 then v2
        assert [int(n) for n, _ in ticks] == list(range(1, len(ticks) + 1))
        labels = [label for _, label in ticks]
        assert labels == sorted(labels) and set(labels) == {"v1", "v2"}, labels


def test_thread_reboot_into_a_new_main(run):
    program = run("thread_reboot")
    program.wait_for(lambda line: line.startswith("v1 tick "), count=3)
    applied(program.push("update.py"), "ticker v2")
    program.wait_for(lambda line: line.startswith("v2 tick "), count=3)
    lines = program.lines()
    assert lines.index("v1 main left") < lines.index(
        next(line for line in lines if line.startswith("v2 tick ")))
    ticks = [re.match(r"^(v\d) tick (\d+)", line) for line in lines]
    ticks = [(m.group(1), int(m.group(2))) for m in ticks if m]
    assert [n for _, n in ticks] == list(range(1, len(ticks) + 1))  # the count went on
    assert all(line.endswith("in ticker, reboots 1") for line in lines
               if line.startswith("v2 tick "))


# -- 8. situation 1 over a PipeListener -----------------------------------------------------------


def test_plain_thread_function_redefined_through_a_pipe(run, tmp_path):
    program = run("pipe", "--no-listen", cwd=str(tmp_path))
    path = program.wait_for(lambda line: line.startswith("pipe at "))[0][len("pipe at "):]
    assert path == str(tmp_path / "fifopipe")
    program.wait_for(lambda line: line.startswith("v1 "), count=3)
    # pymoult push --to pipe:PATH (a pipe gives no reply: no --wait)
    pushed = program.start_push("update.py", wait=False, to=f"pipe:{path}").result()
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    program.wait_for(lambda line: line.startswith("v2 "), count=3)
    assert_one_switch(program.lines(), "v1", "v2")
