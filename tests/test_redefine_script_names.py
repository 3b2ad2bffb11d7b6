"""New code from an update script reads the script's names where the module binds the same name
to something else (the original Pymoult rebound the function, so its new code kept the script's
globals), and the module's live state everywhere else."""

import logging
import textwrap
import types

from pymoult.lowlevel.journal import Journal
from pymoult.lowlevel.relinking import redefineFunction


def namespace(source, name):
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


def app_and_script(script_source):
    app = namespace("""
        interval = 5
        def main():
            return "the app's main loop"
        def func():
            return "v1"
    """, "names_app")
    script = namespace(script_source, "pymoult_update_7")
    script.main = app  # the original's `main = sys.modules["__main__"]`
    return app, script


def test_a_name_of_another_type_in_the_module_is_read_from_the_script():
    app, script = app_and_script("""
        def func_v2():
            return f"v2 every {main.interval} s"
    """)
    old_reference = app.func
    journal = Journal()
    with journal.recording():
        redefineFunction(app, app.func, script.func_v2)
    assert old_reference() == "v2 every 5 s"
    assert app.main() == "the app's main loop"  # the module's own main is untouched
    assert app.__dict__["main (from pymoult_update_7)"] is app
    journal.rollback()
    assert old_reference() == "v1" and "main (from pymoult_update_7)" not in app.__dict__


def test_a_name_of_the_same_type_stays_the_modules_live_state():
    app, script = app_and_script("""
        interval = 99
        def func_v2():
            return f"v2 every {interval} s"
    """)
    redefineFunction(app, "func", script.func_v2)
    assert app.func() == "v2 every 5 s"
    app.interval = 6
    assert app.func() == "v2 every 6 s"


def test_names_nested_functions_read_are_aliased_too():
    app, script = app_and_script("""
        def func_v2():
            return [main.interval * n for n in (1, 2)], (lambda: main.interval)()
    """)
    redefineFunction(app, "func", script.func_v2)
    assert app.func() == ([5, 10], 5)


def test_a_name_also_used_as_an_attribute_stays_the_modules_and_says_so(caplog):
    app, script = app_and_script("""
        def func_v2():
            return main.main is not None
    """)
    with caplog.at_level(logging.WARNING, logger="pymoult"):
        redefineFunction(app, "func", script.func_v2)
    assert "reads main as globals and as attribute names in one function" in caplog.text
    assert "main (from pymoult_update_7)" not in app.__dict__
