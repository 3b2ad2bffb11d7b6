"""ModuleUpdate: functions made before the update by a changed function (closures from a
factory, a method, a decorator) run the new version of their code when their free variables
are the same; else they keep the old code and the update's steps say why. Journaled: a rollback
gives them their old code back."""

import threading

import pytest

from pymoult.highlevel.updates import ModuleUpdate, UpdateState

from modules import WAIT, loaded, update_to

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("flow")]

FACTORY_V1 = """\
def make(x):
    def inner():
        return x * 2
    return inner


handler = make(3)
"""

FACTORY_V2 = FACTORY_V1.replace("return x * 2", "return x * 3")


def test_closures_made_before_run_the_new_inner_code(tmp_path, manager):
    app = loaded(tmp_path, FACTORY_V1)
    handler, make = app.handler, app.make
    held = make(4)  # a reference from before, outside the module
    callbacks = {"on_event": make(5)}
    assert handler() == 6 and held() == 8
    update = update_to(manager, app, FACTORY_V2)
    assert update.state is UpdateState.APPLIED
    assert app.handler is handler and handler() == 9  # state (x) kept, new code
    assert held() == 12 and callbacks["on_event"]() == 15
    assert make(6)() == 18 and app.make is make
    assert not any(step.action == "note" for step in update.steps)


def test_changed_free_variables_leave_old_closures_untouched_with_a_note(tmp_path, manager):
    app = loaded(tmp_path, FACTORY_V1)
    handler, held = app.handler, app.make(4)
    new = FACTORY_V1.replace("def make(x):\n", "def make(x, y=1):\n").replace(
        "return x * 2", "return x * 2 + y")
    update = ModuleUpdate(app, source=new)
    notes = [step for step in update.steps if step.action == "note"]
    assert len(notes) == 1 and notes[0].line == 1
    assert notes[0].name.endswith("inner")
    assert notes[0].detail == ("functions it made before the update keep their old code: free "
                               "variables changed (before: ('x',); after: ('x', 'y'))")
    manager.apply_update(update, timeout=WAIT)
    assert handler() == 6 and held() == 8  # untouched
    assert app.make(4)() == 9  # new closures run the new code


def test_a_rollback_gives_closures_their_old_code_back(tmp_path, manager):
    app = loaded(tmp_path, FACTORY_V1)
    handler, held = app.handler, app.make(4)
    code = handler.__code__

    def fail(update):
        assert handler() == 9  # swapped by then
        raise RuntimeError("step failed")
    update = ModuleUpdate(app, source=FACTORY_V2, steps=[fail])
    with pytest.raises(RuntimeError, match="step failed"):
        manager.apply_update(update, timeout=WAIT)
    assert handler.__code__ is code and handler() == 6 and held() == 8
    assert app.make(4)() == 8


def test_lambdas_nested_closures_and_methods_that_make_functions(tmp_path, manager):
    app = loaded(tmp_path, """\
def adder(n):
    return lambda x: x + n


def outer(a):
    def middle(b):
        def inner():
            return (a, b, "v1")
        return inner
    return middle


class Menu:
    def action(self, label):
        def run():
            return f"{label}: v1"
        return run
""")
    add2, middle, inner = app.adder(2), app.outer(1), app.outer(1)(2)
    run = app.Menu().action("open")
    menu = app.Menu()
    update_to(manager, app, """\
def adder(n):
    return lambda x: x + n * 100


def outer(a):
    def middle(b):
        def inner():
            return (a, b, "v2")
        return inner
    return middle


class Menu:
    def action(self, label):
        def run():
            return f"{label}: v2"
        return run
""")
    assert add2(1) == 201
    assert inner() == (1, 2, "v2") and middle(3)() == (1, 3, "v2")
    assert run() == "open: v2" and menu.action("save")() == "save: v2"


def test_functions_wrapped_by_a_changed_decorator_run_its_new_wrapper(tmp_path, manager):
    app = loaded(tmp_path, """\
import functools


def logged(function):
    @functools.wraps(function)
    def wrapper(*args):
        return "log:" + str(function(*args))
    return wrapper


@logged
def double(x):
    return x * 2
""")
    double = app.double
    update_to(manager, app, """\
import functools


def logged(function):
    @functools.wraps(function)
    def wrapper(*args):
        return "LOG:" + str(function(*args))
    return wrapper


@logged
def double(x):
    return x * 2
""")
    assert app.double is double and double(2) == "LOG:4"
    assert double.__wrapped__(2) == 4


def test_a_closure_below_an_insertion_gets_its_new_line_numbers(tmp_path, manager):
    app = loaded(tmp_path, "def make(x):\n    def inner():\n        raise ValueError(x)\n"
                           "    return inner\n")
    handler = app.make(1)
    new = "def make(x):\n    unused = 0\n    def inner():\n        raise ValueError(x)\n" \
          "    return inner\n"
    update_to(manager, app, new)
    with pytest.raises(ValueError) as caught:
        handler()
    assert caught.traceback[-1].lineno + 1 == 4


def test_a_closure_it_changes_must_not_be_running(tmp_path, manager):
    app = loaded(tmp_path, "def make(started, release):\n    def inner():\n        started.set()\n"
                           "        release.wait(10)\n        return 'v1'\n    return inner\n")
    started, release = threading.Event(), threading.Event()
    work = app.make(started, release)
    results = []
    worker = threading.Thread(target=lambda: results.append(work()))
    worker.start()
    try:
        assert started.wait(WAIT)
        update = ModuleUpdate(app, source=open(app.__file__).read().replace("'v1'", "'v2'"))
        assert not update.check_alterability()  # work() runs the old inner code
    finally:
        release.set()
        worker.join(WAIT)
    assert results == ["v1"] and update.check_alterability()
    manager.apply_update(update, timeout=WAIT)
    assert work() == "v2"


def test_an_inner_function_renamed_is_noted_and_its_closures_keep_their_code(tmp_path, manager):
    app = loaded(tmp_path, FACTORY_V1)
    handler = app.handler
    update = update_to(manager, app, FACTORY_V1.replace("inner", "doubler").replace(
        "x * 2", "x * 4"))
    notes = [step for step in update.steps if step.action == "note"]
    assert len(notes) == 1 and notes[0].name.endswith("inner") and notes[0].detail == (
        "functions it made before the update keep their old code: the new version has no "
        "function of that name there")
    assert handler() == 6 and app.make(1)() == 4


def test_a_running_closure_whose_code_only_moved_does_not_delay_the_update(tmp_path, manager):
    app = loaded(tmp_path, "def make(started, release):\n    def inner():\n        started.set()\n"
                           "        release.wait(10)\n        return 'v1'\n    return inner\n")
    started, release = threading.Event(), threading.Event()
    work = app.make(started, release)
    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert started.wait(WAIT)
        new = open(app.__file__).read().replace("    def inner", "    unused = 0\n    def inner")
        update = ModuleUpdate(app, source=new)
        assert update.check_alterability()  # only make's code and inner's line numbers change
        manager.apply_update(update, timeout=WAIT)
        assert work.__code__.co_firstlineno == 3
    finally:
        release.set()
        worker.join(WAIT)
