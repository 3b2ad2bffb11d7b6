"""What a ModuleUpdate leaves running: once applied, one line per thread still running code it
replaced (pymoult.highlevel.stale_frames), logged, and none for an update rolled back."""

import logging
import sys
import textwrap
import threading
import types

import pytest

from pymoult import source_tracking
from pymoult.highlevel.stale_frames import ModuleCode, stale_frames
from pymoult.highlevel.updates import ModuleUpdate, UpdateState
from pymoult.lowlevel.alterability import staticUpdatePoint, thread_frames
from pymoult.threads import DSU_Thread

from modules import WAIT, loaded

pytestmark = pytest.mark.timeout(30)


def line_of(source, text):
    return textwrap.dedent(source).splitlines().index(text) + 1


# -- the threads still running old code ----------------------------------------------------------

LOOP = """
def loop(stop, parked):
    while not stop.is_set():
        parked.set()
        POINT()

def other():
    return 1
"""


def parked_in(spawn, function, *args, name="looper"):
    """A DSU_Thread running ``function(stop, parked, *args)``, once it has reached its loop."""
    parked = threading.Event()
    thread = spawn(DSU_Thread(target=function, args=(spawn.stop, parked, *args), name=name))
    assert parked.wait(WAIT)
    return thread


def loop_module(tmp_path):
    app = loaded(tmp_path, LOOP)
    app.POINT = staticUpdatePoint
    return app


def applied(manager, update):
    update.suspension = "points"  # parked at the point: the line is known
    manager.apply_update(update, timeout=WAIT)
    assert update.state is UpdateState.APPLIED
    return update


def test_a_thread_parked_in_a_changed_function_is_named_with_the_line(tmp_path, manager, spawn,
                                                                        caplog):
    app = loop_module(tmp_path)
    worker = parked_in(spawn, app.loop)
    new = LOOP.replace("parked.set()", "parked.set(); version = 2")
    with caplog.at_level(logging.WARNING, logger="pymoult"):
        update = applied(manager, ModuleUpdate(app, source=new, threads=[worker]))
    line = line_of(LOOP, "        POINT()")
    expected = f"thread looper still runs the old code of {app.__name__}.loop (line {line}) " \
               "until it returns"
    assert update.warnings == [expected]
    assert any(expected in record.getMessage() and record.levelno == logging.WARNING
               for record in caplog.records)


def test_a_changed_method_and_a_removed_function_running_are_named(tmp_path, manager, spawn):
    source = LOOP + textwrap.dedent("""
        class Job:
            def run(self, stop, parked):
                while not stop.is_set():
                    parked.set()
                    POINT()
        """)
    app = loaded(tmp_path, source)
    app.POINT = staticUpdatePoint
    job = parked_in(spawn, app.Job().run, name="job")
    removed = parked_in(spawn, app.loop, name="gone")
    new = source.replace("            parked.set()", "            parked.set(); v = 2")
    new = new.replace(LOOP, "")  # loop and other are removed
    update = applied(manager, ModuleUpdate(app, source=new, threads=[job, removed]))
    assert sorted(update.warnings) == [
        f"thread gone still runs the old code of {app.__name__}.loop (line "
        f"{line_of(source, '        POINT()')}) until it returns",
        f"thread job still runs the old code of {app.__name__}.Job.run (line "
        f"{line_of(source, '            POINT()')}) until it returns"]


def test_a_thread_in_an_unchanged_function_is_not_named(tmp_path, manager, spawn):
    app = loop_module(tmp_path)
    worker = parked_in(spawn, app.loop)
    update = applied(manager, ModuleUpdate(app, source=LOOP.replace("return 1", "return 2"),
                                           threads=[worker]))
    assert update.warnings == []


def test_an_update_rolled_back_names_no_thread(tmp_path, manager, spawn, caplog):
    app = loop_module(tmp_path)
    worker = parked_in(spawn, app.loop)

    def fail(update):
        raise RuntimeError("hand-written step failed")

    update = ModuleUpdate(app, source=LOOP.replace("parked.set()", "parked.set(); v = 2"),
                          threads=[worker], steps=[fail])
    update.suspension = "points"
    with caplog.at_level(logging.WARNING, logger="pymoult"), \
            pytest.raises(RuntimeError, match="hand-written"):
        manager.apply_update(update, timeout=WAIT)
    assert update.state is UpdateState.ROLLED_BACK and update.warnings == []
    assert not any("still runs the old code" in r.getMessage() for r in caplog.records)


MODULE_CODE = """
import sys
CTL = sys.modules["pm_stale_control"]
CTL.calls.append("start")
CTL.entered.set()
CTL.release.wait(30)
"""


@pytest.fixture
def control():
    module = types.ModuleType("pm_stale_control")
    module.calls, module.entered, module.release = [], threading.Event(), threading.Event()
    sys.modules[module.__name__] = module
    yield module
    module.release.set()
    del sys.modules[module.__name__]
    sys.modules.pop("pm_stale_module_code", None)


def importing(tmp_path, spawn, control):
    """A module whose module-level code is still running in thread ``importer`` (blocked at
    its last statement)."""
    found = {}
    thread = spawn(threading.Thread(target=lambda: found.update(
        module=loaded(tmp_path, MODULE_CODE, name="pm_stale_module_code")), name="importer"))
    assert control.entered.wait(WAIT)
    module = sys.modules["pm_stale_module_code"]
    return thread, module


def test_module_code_running_a_changed_statement_is_named(tmp_path, manager, spawn, control):
    _, module = importing(tmp_path, spawn, control)
    update = ModuleUpdate(module, source=MODULE_CODE.replace("wait(30)", "wait(31)"))
    manager.apply_update(update, timeout=WAIT)
    line = line_of(MODULE_CODE, "CTL.release.wait(30)")
    assert update.warnings == [f"thread importer still runs the old module-level code of "
                               f"pm_stale_module_code (line {line}): module code is not run "
                               "again"]


def test_module_code_past_a_changed_statement_is_not_named(tmp_path, manager, spawn, control):
    _, module = importing(tmp_path, spawn, control)
    update = ModuleUpdate(module, source=MODULE_CODE.replace('"start"', '"started"'))
    manager.apply_update(update, timeout=WAIT)
    assert [step.action for step in update.steps] == ["note"] and update.warnings == []


@pytest.fixture
def tracking():
    was = source_tracking.is_tracking()
    source_tracking.track_sources(include=lambda name, path: name == "pm_stale_module_code")
    yield
    if not was:
        source_tracking.stop_tracking()


def test_after_an_update_moved_the_lines_the_import_source_locates_the_frame(
        tmp_path, manager, spawn, control, tracking):
    """The <module> code keeps the lines of the import; an update that inserted a line moved
    the module's statements: the statement is found by its text in the tracked source."""
    _, module = importing(tmp_path, spawn, control)
    moved = MODULE_CODE.replace("import sys\n", "import sys\nEXTRA = 1\n")
    manager.apply_update(ModuleUpdate(module, source=moved), timeout=WAIT)
    past = ModuleUpdate(module, source=moved.replace('"start"', '"started"'))
    manager.apply_update(past, timeout=WAIT)
    assert past.warnings == []
    changed = ModuleUpdate(module, source=moved.replace('"start"', '"started"').replace(
        "wait(30)", "wait(31)"))
    manager.apply_update(changed, timeout=WAIT)
    line = line_of(MODULE_CODE, "CTL.release.wait(30)")  # of the import, where the frame is
    assert changed.warnings == [f"thread importer still runs the old module-level code of "
                                f"pm_stale_module_code (line {line}): module code is not run "
                                "again"]


# -- the computation ---------------------------------------------------------------------------

def test_stale_frames_names_each_thread_once_per_code_outermost_first(spawn):
    entered, release = threading.Event(), threading.Event()

    def inner(depth):
        if depth:
            return inner(depth - 1)
        entered.set()
        release.wait(WAIT)

    def outer():
        inner(2)

    spawn(threading.Thread(target=outer, name="worker"))
    assert entered.wait(WAIT)
    try:
        lines = stale_frames({inner.__code__: "m.inner", outer.__code__: "m.outer"})
    finally:
        release.set()
    outer_line = outer.__code__.co_firstlineno + 1
    inner_line = inner.__code__.co_firstlineno + 2  # the outermost call of inner, recursing
    assert lines == [
        f"thread worker still runs the old code of m.outer (line {outer_line}) until it returns",
        f"thread worker still runs the old code of m.inner (line {inner_line}) until it returns"]
    assert stale_frames({}) == []


def test_thread_frames_lists_the_calling_thread_from_its_caller_out():
    me = threading.current_thread().name
    frames = [frame for name, frame in thread_frames() if name == me]
    this_test = test_thread_frames_lists_the_calling_thread_from_its_caller_out
    assert frames[0].f_code is this_test.__code__
    assert len(frames) > 1  # and its callers


def test_module_code_finds_the_statement_by_its_text_where_lines_moved():
    statement = (10, ["while running:\n", "    step()\n"])
    code = ModuleCode("m", {}, [statement], None)
    running = ["import x\n", "while running:\n", "    step()\n", "print('done')\n"]
    assert code.runs_old_statement(2, running) and code.runs_old_statement(3, running)
    assert not code.runs_old_statement(1, running) and not code.runs_old_statement(4, running)
    assert code.runs_old_statement(4, None)  # the running source unknown: any line counts


def test_a_module_code_frame_elsewhere_in_the_module_is_not_named():
    namespace = {"__name__": "m"}
    frames = []
    source = "import sys\nframes.append(sys._getframe())\n"
    namespace["frames"] = frames
    exec(compile(source, "<m>", "exec"), namespace)
    lines = source.splitlines(True)
    here = ModuleCode("m", namespace, [(2, [lines[1]])], lambda: lines)
    elsewhere = ModuleCode("m", namespace, [(1, [lines[0]])], lambda: lines)
    pairs = [("T", frames[0])]
    assert stale_frames({}, [here], pairs) == [
        "thread T still runs the old module-level code of m (line 2): module code is not run "
        "again"]
    assert stale_frames({}, [elsewhere], pairs) == []
    other_namespace = ModuleCode("m", {}, [(2, [lines[1]])], lambda: lines)
    assert stale_frames({}, [other_namespace], pairs) == []
