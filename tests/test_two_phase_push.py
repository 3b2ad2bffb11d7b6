"""Two-phase pushes: updates prepared (threads held, about to apply), then committed or aborted
by the client, or aborted by themselves when the decision does not come within the hold."""

import time

import pytest

from listening import APP, WAIT, App
from pymoult import client
from pymoult.delivery import Listener
from pymoult.errors import PymoultValueError, TwoPhaseError

pytestmark = pytest.mark.timeout(60)

SET_VERSION = """
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import Update
from pymoult.lowlevel.journal import set_attribute

app = sys.modules[{app!r}]

class SetVersion(Update):
    def apply(self):
        set_attribute(app, "VERSION", {version})

for name in {names!r}:
    fetch_manager({manager!r}).add_update(SetVersion(name, threads=[app.worker]))
"""


def script(manager, version=2, names=("two-phase v2",)):
    return SET_VERSION.format(app=APP, manager=manager.name, version=version, names=names)


@pytest.fixture
def app(spawn):
    application = App(spawn.stop)
    application.module.VERSION = 1
    spawn(application.thread)
    assert application.wait_for(lambda a: a.count >= 1)
    yield application
    application.close()
    assert not application.errors


@pytest.fixture
def listener(manager):
    with Listener(manager=manager) as listener:
        yield listener


def test_prepared_then_committed(app, manager, listener):
    prepared = client.push(listener.address, script(manager), timeout=WAIT, two_phase=True)
    assert prepared["ok"] is True and prepared["hold"] == 5.0
    transaction = prepared["transaction"]
    assert [(u["name"], u["state"], u["finished"]) for u in prepared["updates"]] == [
        ("two-phase v2", "applying", False)]
    count = app.count
    assert app.module.VERSION == 1  # prepared, not applied: the worker is held meanwhile
    assert app.count == count
    before = time.time()
    committed = client.commit(listener.address, transaction, timeout=WAIT)
    assert committed["ok"] is True and committed["decision"] == "commit"
    [update] = committed["updates"]
    assert (update["name"], update["state"], update["error"]) == ("two-phase v2", "applied",
                                                                  None)
    assert before <= update["applied_at"] <= time.time()
    assert app.module.VERSION == 2
    assert app.wait_for(lambda a: a.count > count)  # the worker runs again
    assert listener.applied_updates[-1] == "two-phase v2"
    with pytest.raises(TwoPhaseError, match=f"no prepared transaction '{transaction}' here"):
        client.commit(listener.address, transaction, timeout=WAIT)


def test_prepared_then_aborted_changes_nothing(app, manager, listener):
    prepared = client.push(listener.address, script(manager), timeout=WAIT, two_phase=True)
    aborted = client.abort(listener.address, prepared["transaction"], timeout=WAIT)
    assert aborted["ok"] is True and aborted["decision"] == "abort"
    [update] = aborted["updates"]
    assert update["state"] == "rolled back" and update["applied_at"] is None
    assert update["error"] == "TwoPhaseError: 'two-phase v2' was prepared, then aborted"
    assert app.module.VERSION == 1


def test_an_undecided_transaction_aborts_by_itself_after_its_hold(app, manager, listener):
    prepared = client.push(listener.address, script(manager), timeout=WAIT, two_phase=True,
                           hold=0.2)
    assert prepared["hold"] == 0.2
    assert manager.wait_current_update(WAIT)  # it ends without anybody deciding
    late = client.commit(listener.address, prepared["transaction"], timeout=WAIT)
    assert late["ok"] is False and late["decision"] == "expired"
    [update] = late["updates"]
    assert update["state"] == "rolled back"
    assert "was prepared but not committed within 0.2 s: rolled back" in update["error"]
    assert app.module.VERSION == 1


def test_two_updates_on_one_manager_cannot_be_prepared(app, manager, listener):
    reply = client.push(listener.address, script(manager, names=("first", "second")),
                        timeout=WAIT, two_phase=True)
    assert reply["ok"] is False and reply["transaction"] is None
    assert reply["script_error"]["type"] == "TwoPhaseError"
    assert "a two-phase push takes one update per manager, and 'second' is a second one" \
        in reply["script_error"]["message"]
    [first] = reply["updates"]  # the first was queued, prepared or not, then rolled back
    assert first["name"] == "first" and first["state"] in ("rolled back", "cancelled")
    assert app.module.VERSION == 1


def test_an_update_that_cannot_prepare_fails_the_push(app, manager, listener):
    never = """
import sys, threading
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import Update
from pymoult.threads import DSU_Thread

blocked = DSU_Thread(target=threading.Event().wait, args=(5,), daemon=True)
blocked.start()

class Never(Update):
    suspension, on_timeout = "points", "fail"
    def apply(self):
        pass

fetch_manager({manager!r}).add_update(Never("never prepared", threads=[blocked], timeout=0.2))
""".format(manager=manager.name)
    reply = client.push(listener.address, never, timeout=WAIT, two_phase=True)
    assert reply["ok"] is False and reply["transaction"] is None
    [update] = reply["updates"]
    assert update["state"] == "failed" and "UpdateTimeoutError" in update["error"]


def test_bad_two_phase_requests_are_refused():
    with pytest.raises(PymoultValueError, match="a two-phase push needs a reply"):
        client.push("pipe:/tmp/nowhere", "x = 1", wait=False, two_phase=True)
    from pymoult import protocol
    from pymoult.errors import ProtocolError

    for hold in (0, -1, 61, "5", True):
        with pytest.raises(ProtocolError, match="hold must be a number of seconds"):
            protocol.validate_request({"op": "push", "script": "", "two_phase": True,
                                       "hold": hold})
    with pytest.raises(ProtocolError, match="commit needs 'transaction'"):
        protocol.validate_request({"op": "commit"})
