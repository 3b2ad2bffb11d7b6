"""The push reply of an update that lists its steps (a ModuleUpdate, duck-typed): its steps,
and once applied the threads still running code it replaced; other updates' records are
unchanged."""

import sys
import threading

import pytest

from pymoult.highlevel.listener import run_script
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

from modules import WAIT, loaded

pytestmark = pytest.mark.timeout(30)

LOOP = """
def loop(stop, parked):
    while not stop.is_set():
        parked.set()
        POINT()
"""

SCRIPT = """
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import ModuleUpdate, Update

class HandWritten(Update):
    steps = "not a list of steps"
    def apply(self):
        pass

def fail(update):
    raise RuntimeError("no")

app = sys.modules[{module!r}]
manager = fetch_manager({manager!r})
manager.add_update(HandWritten("by hand"))
update = ModuleUpdate(app, source={source!r}, threads=[app.WORKER], steps={steps},
                      name="by source")
update.suspension = "points"  # parked at its update point: the line is known
manager.add_update(update)
"""


@pytest.fixture
def looping(tmp_path, spawn):
    app = loaded(tmp_path, LOOP)
    app.POINT = staticUpdatePoint
    parked = threading.Event()
    app.WORKER = spawn(DSU_Thread(target=app.loop, args=(spawn.stop, parked), name="looper"))
    assert parked.wait(WAIT)
    yield app
    sys.modules.pop(app.__name__, None)


def push(app, manager, source, steps="[]"):
    script = SCRIPT.format(module=app.__name__, manager=manager.name, source=source, steps=steps)
    return run_script(script, wait=True, timeout=WAIT)


def test_a_module_update_reports_its_steps_and_the_thread_left_in_old_code(looping, manager):
    reply = push(looping, manager, LOOP.replace("parked.set()", "parked.set(); v = 2"))
    assert reply["ok"], reply
    by_hand, by_source = reply["updates"]
    assert by_hand == {"name": "by hand", "state": "applied", "finished": True, "error": None}
    name = looping.__name__
    assert by_source["steps"] == [f"update function {name}.loop (line 2): in place"]
    assert by_source["warnings"] == [f"thread looper still runs the old code of {name}.loop "
                                     "(line 5) until it returns"]


def test_a_module_update_rolled_back_reports_its_steps_and_no_warning(looping, manager):
    reply = push(looping, manager, LOOP.replace("parked.set()", "parked.set(); v = 3"),
                 steps="[fail]")
    assert not reply["ok"]
    by_source = reply["updates"][1]
    assert by_source["state"] == "rolled back" and by_source["error"] == "RuntimeError: no"
    assert by_source["steps"] and by_source["warnings"] == []
