"""State that grows with each update stays bounded: the managers' history, the listener's
``applied_updates`` and the names behind ``isApplied``; ``status`` lists the running scripts,
with their age, and says when one overran its timeout."""

import json
import sys
import threading
import types

import pytest

from listening import WAIT
from pymoult import client
from pymoult.highlevel import lifecycle
from pymoult.highlevel.listener import Listener, running_scripts
from pymoult.highlevel.managers import Manager
from pymoult.highlevel.updates import Update, applied_update_names, isApplied


class Noop(Update):
    def check_alterability(self):
        return True

    def apply(self):
        pass


class Refused(Noop):
    def check_requirements(self):
        return "never"


def run(manager, update):
    future = manager.add_update(update)
    while not future.done():
        manager.apply_next_update()
    return update


@pytest.mark.timeout(120)
def test_history_bounded_after_2000_updates_and_isApplied_still_right():
    manager = Manager("bounded history")
    listener = Listener(manager=manager).start()
    try:
        run(manager, Noop(name="bounded-first"))
        for number in range(1999):
            run(manager, (Refused if number % 10 == 0 else Noop)(name=f"bounded-{number}"))
        records = manager.history()
        assert len(records) == Manager.history_size == 500
        assert records[-1].name == "bounded-1998"
        forgotten = manager.forgotten()
        assert sum(forgotten.values()) == 1500
        stats = manager.statistics()["finished"]
        assert sum(stats.values()) == 2000 and stats["aborted"] == 200  # counted, all of them
        # the original's isApplied(name) answers for the oldest update too
        assert isApplied("bounded-first") and isApplied("bounded-1") and not isApplied("bounded-0")
        assert len(applied_update_names()) == lifecycle.APPLIED_NAMES_KEPT
        reply = client.history(listener.address)
        [reported] = reply["managers"]
        assert len(reported["history"]) == 500 and reported["forgotten"] == forgotten
        assert len(json.dumps(reply)) < 200_000  # 2,000 updates gave 602 KB before
    finally:
        assert listener.stop(WAIT)


def test_the_history_size_is_a_setting():
    manager = Manager("small history")
    manager.history_size = 3
    for number in range(5):
        run(manager, Noop(name=f"small-{number}"))
    assert [r.name for r in manager.history()] == ["small-2", "small-3", "small-4"]
    assert manager.forgotten() == {"applied": 2}
    assert manager.statistics()["finished"] == {"applied": 5}


def test_listener_applied_updates_keeps_the_last_ones():
    listener = Listener()
    try:
        listener.history_size = 2
        for name in "abc":
            listener.applied_updates.append(name)
        assert listener.applied_updates == ["b", "c"] and listener.applied_total == 3
    finally:
        listener.stop(WAIT)


GATE = "bounded_history_gate"
SLOW_SCRIPT = f"import sys\nsys.modules[{GATE!r}].entered.set()\n" \
              f"sys.modules[{GATE!r}].release.wait(30)\n"


@pytest.mark.timeout(60)
def test_status_lists_a_running_script_with_its_age_and_an_overrun_one(monkeypatch):
    gate = types.SimpleNamespace(entered=threading.Event(), release=threading.Event())
    monkeypatch.setitem(sys.modules, GATE, gate)
    listener = Listener().start()
    before = {s["number"] for s in running_scripts()}  # other tests' scripts, if any

    def ours():
        return [s for s in client.status(listener.address)["listener"]["scripts"]
                if s["number"] not in before]

    try:
        # a timeout shorter than the script: the reply says so, the script goes on
        reply = client.push(listener.address, SLOW_SCRIPT, timeout=0.2)
        assert reply["ok"] is False
        assert reply["script_error"]["type"] == "TimeoutError"
        assert "Python cannot stop a thread" in reply["script_error"]["message"]
        assert gate.entered.wait(WAIT)
        [script] = ours()
        assert script["overrun"] is True and script["age"] > 0.2 and script["timeout"] == 0.2
        assert "Python cannot stop a thread, so it goes on" in script["note"]
        assert script["origin"].startswith("connection ")
        # one without a timeout is listed with its age, not overrun
        pusher = threading.Thread(target=client.push, args=(listener.address, SLOW_SCRIPT),
                                  kwargs={"wait": False, "timeout": None})
        gate.entered.clear()
        pusher.start()
        assert gate.entered.wait(WAIT)
        scripts = ours()
        assert len(scripts) == 2 and scripts[1]["age"] >= 0 and scripts[1]["overrun"] is False
    finally:
        gate.release.set()
        assert listener.stop(WAIT)
    pusher.join(WAIT)
    assert not pusher.is_alive()
