"""`pymoult push --module NAME FILE`: new versions of modules sent to a running application,
applied as one ModuleUpdate; real processes."""

import textwrap

import pytest

from app_process import App, pymoult

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
