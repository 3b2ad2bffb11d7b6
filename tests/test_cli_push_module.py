"""`pymoult push --module NAME FILE`: new versions of modules sent to a running application,
applied as one ModuleUpdate; real processes."""

import json
import re
import textwrap

import pytest

from app_process import App, pymoult
from pymoult.highlevel.module_update import module_update_script

pytestmark = pytest.mark.timeout(60)

APP = """
import sys, time
import helper_mod

running = True
count = 0

def greet(n):
    return f"v1 #{n} {helper_mod.suffix()}"

while running:
    count += 1
    print(greet(count), flush=True)
    time.sleep(0.01)
print("finished", flush=True)
"""

HELPER = "def suffix():\n    return 'h1'\n"


@pytest.fixture
def greeter(tmp_path):
    (tmp_path / "helper_mod.py").write_text(HELPER)
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(APP))
    process = App(path, env=None)
    yield process
    process.close()


def number(line):
    return int(line.split("#")[1].split()[0])


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_two_modules_updated_together_and_state_kept(greeter, tmp_path):
    before = greeter.stdout.wait_for(lambda line: line.startswith("v1"))[0]
    new_app = write(tmp_path, "new_app.py", APP.replace('f"v1 #', 'f"v2 #'))
    new_helper = write(tmp_path, "new_helper.py", HELPER.replace("h1", "h2"))
    pushed = pymoult("push", "--module", "__main__", new_app, "--module", "helper_mod",
                     new_helper, "--wait", "--to", greeter.address)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "update 'update modules __main__, helper_mod': applied" in pushed.stdout
    after = greeter.stdout.wait_for(lambda line: line.startswith("v2"))[0]
    assert after.endswith("h2") and number(after) > number(before)  # the counter went on
    lines = greeter.stdout.lines
    assert not any(line.startswith("v1") and line.endswith("h2") for line in lines)
    assert not any(line.startswith("v2") and line.endswith("h1") for line in lines)
    finish = pymoult("push", "-", "--wait", "--to", greeter.address,
                     stdin="import sys\nsys.modules['__main__'].running = False\n")
    assert finish.returncode == 0
    assert greeter.wait() == 0


def test_a_version_that_does_not_compile_is_reported_and_changes_nothing(greeter, tmp_path):
    greeter.stdout.wait_for(lambda line: line.startswith("v1"))
    broken = write(tmp_path, "broken.py", APP.replace("def greet(n):", "def greet(n)"))
    pushed = pymoult("push", "--module", "__main__", broken, "--wait", "--to", greeter.address)
    assert pushed.returncode == 1
    assert "not applied: the new version of '__main__' does not compile" in pushed.stdout
    assert "Traceback" not in pushed.stdout
    line = textwrap.dedent(APP).splitlines().index("def greet(n):") + 1
    assert f"({broken}, line {line})" in pushed.stdout  # the file pushed, not the one running
    count = len(greeter.stdout.lines)
    greeter.stdout.wait_for(lambda line: line.startswith("v1"), count=count + 3)


@pytest.mark.parametrize("args, message", [
    (("push",), "give an update script, or --module NAME [FILE]"),
    (("push", "script.py", "--module", "m", "m.py"), "give an update script, or --module"),
    (("push", "--module", "m", "a.py", "--module", "m", "b.py"), "module m given twice"),
])
def test_bad_usage(args, message, tmp_path):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("x = 1\n")
    args = tuple(str(tmp_path / a) if a.endswith(".py") else a for a in args)
    result = pymoult(*args, "--to", "unix:/nonexistent/socket")
    assert result.returncode == 2 and message in result.stderr


def test_an_unreadable_module_file_is_a_usage_error(tmp_path):
    result = pymoult("push", "--module", "m", str(tmp_path / "missing.py"),
                     "--to", "unix:/nonexistent/socket")
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_files_edited_in_place_are_pushed_by_module_name_alone(greeter, tmp_path):
    """The common flow: edit the files the application runs, then push the modules by name
    (pymoult run tracked their sources at import: it knows what they were)."""
    greeter.stdout.wait_for(lambda line: line.startswith("v1"))
    (tmp_path / "helper_mod.py").write_text(HELPER.replace("h1", "h2"))
    (tmp_path / "app.py").write_text(textwrap.dedent(APP).replace('f"v1 #', 'f"v2 #'))
    pushed = pymoult("push", "--module", "__main__", "--module", "helper_mod", "--wait",
                     "--to", greeter.address)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    after = greeter.stdout.wait_for(lambda line: line.startswith("v2"))[0]
    assert after.endswith(" h2")


def test_an_edit_after_a_script_changed_the_function_is_applied_not_dropped(greeter, tmp_path):
    """A script redefines helper_mod.suffix; then the file is edited and pushed by name: the
    edit must land (it was once reported applied while the script's code stayed)."""
    greeter.stdout.wait_for(lambda line: line.startswith("v1"))
    script = write(tmp_path, "script.py", """
        import helper_mod
        from pymoult.highlevel.managers import fetch_manager
        from pymoult.highlevel.updates import SafeRedefineUpdate
        def suffix():
            return 'from the script'
        fetch_manager("runtime").add_update(SafeRedefineUpdate(helper_mod, "suffix", suffix))
    """)
    assert pymoult("push", script, "--wait", "--to", greeter.address).returncode == 0
    greeter.stdout.wait_for(lambda line: line.endswith("from the script"))
    (tmp_path / "helper_mod.py").write_text(HELPER.replace("h1", "edited"))
    pushed = pymoult("push", "--module", "helper_mod", "--wait", "--to", greeter.address)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    greeter.stdout.wait_for(lambda line: line.endswith(" edited"))


def test_module_takes_a_name_and_at_most_one_file(greeter):
    refused = pymoult("push", "--module", "helper_mod", "a.py", "b.py", "--to", greeter.address)
    assert refused.returncode == 2
    assert "--module takes a module name and at most one file, got helper_mod a.py b.py" \
        in refused.stderr


def test_a_module_push_that_cannot_apply_says_why_in_a_sentence(greeter, tmp_path):
    unknown = pymoult("push", "--module", "no_such_module", "--wait", "--to", greeter.address)
    assert unknown.returncode == 1
    assert "not applied: no module 'no_such_module' is loaded" in unknown.stdout
    assert "Traceback" not in unknown.stdout
    (tmp_path / "helper_mod.py").write_text(HELPER + "raise RuntimeError('boom')\n")
    raising = pymoult("push", "--module", "helper_mod", "--wait", "--to", greeter.address)
    assert raising.returncode == 1
    assert "not applied: the new version of 'helper_mod' raised RuntimeError('boom')" \
        in raising.stdout
    assert "raise RuntimeError('boom')" in raising.stdout  # the new version's own traceback
    assert "pymoult/highlevel" not in raising.stdout  # and none of Pymoult's frames


# -- what the reply says: the steps, and the threads still running old code ---------------------

JOBS = """
class Job:
    def __init__(self, n):
        self.n = n

    def run(self):
        return f"v1 job {self.n}"

    def old(self):
        return "old"

def legacy():
    return "legacy"
"""

JOBS_2 = """
class Job:
    def __init__(self, n):
        self.n = n

    def run(self):
        return f"v2 job {self.n}"

    def bonus(self):
        return 5
"""

JOBS_APP = """
import time
import jobs

def main():
    n = 0
    while True:
        n += 1
        print("main1", jobs.Job(n).run(), flush=True)
        time.sleep(0.01)

main()
"""


@pytest.fixture
def jobs_app(tmp_path):
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS))
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(JOBS_APP))
    process = App(path, env=None)
    process.stdout.wait_for(lambda line: line.startswith("main1 v1"))
    yield process
    process.close()


def test_the_reply_lists_the_methods_updated_added_and_removed(jobs_app, tmp_path):
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS_2))
    pushed = pymoult("push", "--module", "jobs", "--wait", "--to", jobs_app.address)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    lines = pushed.stdout.splitlines()
    outcome = lines.index("update 'update modules jobs': applied")
    assert lines[outcome + 1:outcome + 6] == [
        "  update class jobs.Job (line 2)",
        "  update method jobs.Job.run (line 6)",
        "  add method jobs.Job.bonus (line 9)",
        "  remove method jobs.Job.old",
        "  remove jobs.legacy: no longer defined (was jobs.legacy)"]
    # the Runner is suspended wherever it is: inside Job.run, it is named
    assert all(line.startswith("  warning: thread Runner still runs the old code of jobs.Job.run")
               for line in lines[outcome + 6:-1])
    assert lines[-1] == "ok"
    jobs_app.stdout.wait_for(lambda line: line.startswith("main1 v2"))


def test_json_carries_the_steps_and_the_warnings(jobs_app, tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(JOBS_APP).replace('"main1"', '"main2"'))
    pushed = pymoult("push", "--module", "__main__", "--wait", "--json", "--to",
                     jobs_app.address)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    [update] = json.loads(pushed.stdout)["updates"]
    line = textwrap.dedent(JOBS_APP).splitlines().index("def main():") + 1
    assert update["steps"] == [f"update function __main__.main (line {line}): in place"]
    [warning] = update["warnings"]
    assert re.fullmatch(r"thread Runner still runs the old code of __main__\.main \(line "
                        r"(\d+)\) until it returns", warning), warning
    count = len(jobs_app.stdout.lines)  # and it does: main never returns
    jobs_app.stdout.wait_for(lambda line: line.startswith("main1"), count=count + 3)
    assert not any(line.startswith("main2") for line in jobs_app.stdout.lines)


def test_module_code_running_a_changed_loop_is_named(greeter, tmp_path):
    greeter.stdout.wait_for(lambda line: line.startswith("v1"))
    (tmp_path / "app.py").write_text(textwrap.dedent(APP).replace("time.sleep(0.01)",
                                                                  "time.sleep(0.02)"))
    pushed = pymoult("push", "--module", "__main__", "--wait", "--to", greeter.address)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    lines = pushed.stdout.splitlines()
    loop = textwrap.dedent(APP).splitlines().index("while running:") + 1
    assert f"  note __main__.<module code> (line {loop}): changed module-level statement not " \
           "run again (module code runs once; its state is kept)" in lines
    [warning] = [line for line in lines if line.startswith("  warning:")]
    assert re.fullmatch(r"  warning: thread Runner still runs the old module-level code of "
                        r"__main__ \(line \d+\): module code is not run again", warning)
    [logged] = greeter.stderr.wait_for(lambda line: "still runs the old module-level" in line)
    assert logged.startswith("pymoult: ") and warning[len("  warning: "):] in logged


def test_a_module_push_rolled_back_reports_its_steps_and_no_warning(jobs_app, tmp_path):
    """A step of the update fails when applied (a hand-written one added to the generated
    script): the update is rolled back, the reply lists its steps and no warning."""
    (tmp_path / "app.py").write_text(textwrap.dedent(JOBS_APP).replace('"main1"', '"main2"'))
    script = module_update_script({"__main__": None}).replace(
        "manager.add_update(update)",
        "def fail(update):\n    raise RuntimeError('step failed')\n"
        "update.extra_steps.append(fail)\nmanager.add_update(update)")
    pushed = pymoult("push", "-", "--wait", "--json", "--to", jobs_app.address, stdin=script)
    assert pushed.returncode == 1, pushed.stdout + pushed.stderr
    [update] = json.loads(pushed.stdout)["updates"]
    assert update["state"] == "rolled back" and update["error"] == "RuntimeError: step failed"
    assert update["steps"] and update["warnings"] == []
    assert "still runs the old code" not in jobs_app.stderr.text()
