"""ModuleUpdate: when it applies (quiescence, update points), several modules at once,
hand-written steps, and the script `pymoult push --module` sends."""

import threading
import time

import pytest

from pymoult.errors import PymoultTypeError, PymoultValueError
from pymoult.highlevel.managers import ThreadedManager
from pymoult.highlevel.module_update import module_update_script
from pymoult.highlevel.updates import ModuleUpdate, UpdateState
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

from modules import WAIT, loaded

pytestmark = pytest.mark.timeout(30)


def wait_until(predicate, timeout=WAIT):
    """Poll ``predicate`` until true (bounded): for states no event announces."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        pause.wait(0.002)


WORKER = """
import threading
inside = threading.Event()
release = threading.Event()

def work(block=False):
    if block:
        inside.set()
        release.wait(10)
    return "v1"
"""


def test_without_threads_it_waits_until_no_thread_runs_a_changed_function(tmp_path, manager, spawn):
    app = loaded(tmp_path, WORKER)
    results = []
    spawn(threading.Thread(target=lambda: results.append(app.work(True))))
    assert app.inside.wait(WAIT)
    update = ModuleUpdate(app, source=WORKER.replace('return "v1"', 'return "v2"'),
                          sleep_time=0.002, max_tries=10**6)
    future = manager.add_update(update)
    wait_until(lambda: update.state is UpdateState.WAITING)
    assert app.work() == "v1" and not future.done()  # a call is running work(): not yet
    app.release.set()
    assert future.result(WAIT) is update
    wait_until(lambda: results)
    assert results == ["v1"]  # the running call finished in the version it started in
    assert app.work() == "v2"


def test_it_waits_for_the_methods_of_a_class_the_new_version_removes(tmp_path):
    app = loaded(tmp_path, WORKER + "\n\nclass Job:\n    def run(self):\n"
                           "        return work(True)\n")
    running = threading.Thread(target=app.Job().run, daemon=True)
    running.start()
    try:
        assert app.inside.wait(WAIT)
        update = ModuleUpdate(app, source=WORKER)
        assert [s.action for s in update.steps] == ["remove"]
        assert app.Job.run.__code__ in update.codes
        assert not update.check_alterability()  # Job.run is running
    finally:
        app.release.set()
        running.join(WAIT)
    assert update.check_alterability()


def test_with_threads_it_applies_at_their_update_points_and_no_pair_is_mixed(tmp_path, manager,
                                                                              spawn):
    app = loaded(tmp_path, """
def tic():
    return "tic1"

def tac():
    return "tac1"
""")
    pairs = []

    def loop():
        while not spawn.stop.is_set():
            pairs.append((app.tic(), app.tac()))
            staticUpdatePoint()

    worker = spawn(DSU_Thread(target=loop, name="ticker"))
    wait_until(lambda: len(pairs) > 10)
    update = ModuleUpdate(app, source="""
def tic():
    return "tic2"

def tac():
    return "tac2"
""", threads=[worker])
    manager.apply_update(update, timeout=WAIT)
    count = len(pairs)
    wait_until(lambda: len(pairs) > count + 10)
    assert set(pairs) == {("tic1", "tac1"), ("tic2", "tac2")}
    first_new = pairs.index(("tic2", "tac2"))
    assert all(p == ("tic1", "tac1") for p in pairs[:first_new])


def test_several_modules_in_one_update(tmp_path, manager):
    base = loaded(tmp_path, "def rate():\n    return 1\n", name="pm_combined_base")
    user = loaded(tmp_path, "from pm_combined_base import rate\n\n"
                            "def price(n):\n    return n * rate()\n", name="pm_combined_user")
    update = ModuleUpdate.combine([
        ModuleUpdate(base, source="def rate():\n    return 2\n"),
        ModuleUpdate(user, source="from pm_combined_base import rate\n\n"
                                  "def price(n):\n    return n * rate() + 1\n"),
    ])
    assert update.name == "update modules pm_combined_base, pm_combined_user"
    assert {s.module for s in update.steps} == {"pm_combined_base", "pm_combined_user"}
    manager.apply_update(update, timeout=WAIT)
    assert user.price(10) == 21


def test_combine_refuses_bad_input(tmp_path):
    app = loaded(tmp_path, "def f():\n    return 1\n")
    one = ModuleUpdate(app, source="def f():\n    return 2\n")
    with pytest.raises(PymoultValueError, match="a module appears twice"):
        ModuleUpdate.combine([one, ModuleUpdate(app, source="def f():\n    return 3\n")])
    with pytest.raises(PymoultTypeError, match="combine takes ModuleUpdate objects"):
        ModuleUpdate.combine([one, "x"])
    with pytest.raises(PymoultTypeError, match="combine takes ModuleUpdate objects"):
        ModuleUpdate.combine([])


def test_hand_written_steps_run_in_the_update_and_a_failing_one_rolls_back(tmp_path, manager):
    app = loaded(tmp_path, "LIMIT = 1\n\ndef f():\n    return LIMIT\n")
    seen = []
    update = ModuleUpdate(app, source="LIMIT = 2\n\ndef f():\n    return LIMIT * 10\n",
                          steps=[lambda u: seen.append(app.f())])
    manager.apply_update(update, timeout=WAIT)
    assert seen == [20]  # the step ran after the generated operations, in the same update

    def failing(update):
        raise RuntimeError("step failed")

    update = ModuleUpdate(app, source="LIMIT = 3\n\ndef f():\n    return LIMIT * 100\n",
                          steps=[failing])
    with pytest.raises(RuntimeError, match="step failed"):
        manager.apply_update(update, timeout=WAIT)
    assert app.f() == 20 and app.LIMIT == 2
    with pytest.raises(PymoultTypeError, match="steps must be callables"):
        ModuleUpdate(app, source="LIMIT = 4\n", steps=[1])


def test_the_push_script_makes_and_queues_one_update(tmp_path):
    app = loaded(tmp_path, "def f():\n    return 1\n")
    script = module_update_script({app.__name__: "def f():\n    return 2\n"})
    manager = ThreadedManager(name="pm-script-manager").start()
    try:
        namespace = {}
        exec(compile(module_update_script({app.__name__: "def f():\n    return 2\n"},
                                          manager="pm-script-manager"), "<push>", "exec"),
             namespace)
        wait_until(lambda: namespace["update"].state.finished)
        assert app.f() == 2
    finally:
        assert manager.stop(WAIT)
    assert script.startswith("#parsed\n")
    with pytest.raises(LookupError, match="no manager called 'runtime'"):
        exec(compile(script, "<push>", "exec"), {})
    with pytest.raises(PymoultTypeError, match="sources must map module names"):
        module_update_script({})


@pytest.mark.usefixtures("flow")  # in each flow, as the rest of ModuleUpdate's cases
def test_only_changed_methods_must_be_quiescent(tmp_path, manager, spawn):
    app = loaded(tmp_path, """
import threading
inside = threading.Event()
stop = threading.Event()

class Server:
    def serve_forever(self):
        inside.set()
        while not stop.wait(0.005):
            self.handle()

    def handle(self):
        return "v1"
""")
    spawn(threading.Thread(target=app.Server().serve_forever))
    assert app.inside.wait(WAIT)
    update = ModuleUpdate(app, source=open(app.__file__).read().replace('"v1"', '"v2"'))
    assert {c.co_name for c in update.codes} == {"handle"}
    manager.apply_update(update, timeout=WAIT)  # serve_forever runs all along
    assert app.Server().handle() == "v2"
    app.stop.set()
