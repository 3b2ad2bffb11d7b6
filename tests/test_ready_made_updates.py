import logging
import sys
import threading
import types

import pytest

from pymoult.highlevel.updates import (EagerConversionUpdate, HeapTraversalUpdate,
                                       LazyConversionUpdate, QuiescentRedefineUpdate,
                                       SafeRedefineMethodUpdate, ThreadRebootUpdate)
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.data_access import HeapWalker
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(30)
WAIT = 10.0


def module(name, source):
    result = types.ModuleType(name)
    sys.modules[name] = result
    exec(source, result.__dict__)
    return result


def test_method_redefinition(manager):
    app = module("ru_methods", "class S:\n    def hello(self):\n        return 'v1'\n")
    new = module("ru_methods_v2", "class S:\n    def hello(self):\n        return 'v2'\n")
    bound = app.S().hello
    manager.apply_update(SafeRedefineMethodUpdate(app.S, "hello", new.S.__dict__["hello"]),
                         timeout=WAIT)
    assert bound() == "v2"


def test_forced_quiescence_redefinition_releases_held_callers_into_the_new_version(manager, spawn):
    app = module("ru_quiet", """
import threading
inside = threading.Event()
release = threading.Event()
def handle(block=False):
    if block:
        inside.set()
        release.wait(10)
    return "v1"
""")
    new = module("ru_quiet_v2", "def handle(block=False):\n    return 'v2'\n")
    running = spawn(threading.Thread(target=app.handle, args=(True,)))
    assert app.inside.wait(WAIT)
    gated = threading.Event()

    class Signalling(QuiescentRedefineUpdate):
        def preupdate_setup(self):
            super().preupdate_setup()
            gated.set()  # new callers are held from now on

    future = manager.add_update(Signalling(app, "handle", new.handle, sleep_time=0.005,
                                           max_tries=2000))
    assert gated.wait(WAIT)
    results = []
    caller = spawn(threading.Thread(target=lambda: results.append(app.handle())))
    app.release.set()  # the running call leaves: quiescent
    running.join(WAIT)
    future.result(WAIT)
    caller.join(WAIT)
    assert results == ["v2"] and app.handle() == "v2"


def test_eager_and_lazy_conversion_updates(manager):
    app = module("ru_conv", "class P:\n    def __init__(self, n):\n        self.n = n\n")
    new = module("ru_conv_v2", "class P:\n    def show(self):\n        return self.label\n")
    eager, lazy_obj = app.P(1), None

    def label(p):
        p.label = f"#{p.n}"

    manager.apply_update(EagerConversionUpdate(app.P, new.P, label), timeout=WAIT)
    assert eager.show() == "#1"
    lazy_app = module("ru_lazy", "class Q:\n    def __init__(self, n):\n        self.n = n\n")
    lazy_new = module("ru_lazy_v2", "class Q:\n    def show(self):\n        return self.label\n")
    lazy_obj = lazy_app.Q(2)
    update = LazyConversionUpdate(lazy_app.Q, lazy_new.Q, lambda q: setattr(q, "label", f"#{q.n}"))
    manager.apply_update(update, timeout=WAIT)
    assert type(lazy_obj) is not lazy_app.Q  # pending until touched
    assert lazy_obj.show() == "#2" and update.conversion.done.is_set()


def test_thread_reboot_update(manager, spawn):
    runs = []
    started = threading.Event()

    def old_main():
        runs.append("old")
        started.set()
        while not spawn.stop.is_set():
            staticUpdatePoint()

    def new_main(tag):
        runs.append(tag)

    thread = spawn(DSU_Thread(target=old_main))
    assert started.wait(WAIT)
    manager.apply_update(ThreadRebootUpdate(thread, new_main, ["new"]), timeout=WAIT)
    thread.join(WAIT)
    assert runs == ["old", "new"] and thread.reboots == 1


def test_heap_traversal_update(manager):
    app = module("ru_heap", "registry = {'a': [1, 2], 'b': (3,)}\n")

    class Counter(HeapWalker):
        ints = 0

        def walk_int(self, obj):
            Counter.ints += 1

    manager.apply_update(HeapTraversalUpdate(Counter(), ["ru_heap"]), timeout=WAIT)
    assert Counter.ints == 3
    assert app.registry


def test_a_forced_quiescence_gate_is_journaled_not_taken_for_an_outside_change(manager, caplog):
    app = module("ru_gate", "def handle():\n    return 'v1'\n")
    new = module("ru_gate_v2", "def handle():\n    return 'v2'\n")
    original = app.handle
    with caplog.at_level(logging.WARNING, logger="pymoult"):
        manager.add_update(QuiescentRedefineUpdate(app, "handle", new.handle)).result(WAIT)
    assert app.handle is original and app.handle() == "v2"
    assert not [r for r in caplog.records if "outside Pymoult" in r.getMessage()]

    class Failing(QuiescentRedefineUpdate):
        def apply(self):
            super().apply()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        manager.add_update(Failing(app, "handle", new.handle)).result(WAIT)
    assert app.handle is original and app.handle() == "v2"  # rolled back: no gate left bound
