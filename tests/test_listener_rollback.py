"""A listener's ``rollback`` request: the updates its pushes applied, reverted newest first at a
safe point, the reply saying exactly what was and was not reverted."""

import pytest

from listening import APP, WAIT, App, update_script
from pymoult import client, protocol
from pymoult.delivery import Listener
from pymoult.errors import ProtocolError, PymoultTypeError, PymoultValueError, RevertError

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

fetch_manager({manager!r}).add_update(SetVersion({name!r}, threads=[app.worker]))
"""


def set_version(manager, version, name):
    return SET_VERSION.format(app=APP, manager=manager.name, version=version, name=name)


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


def test_the_last_push_is_rolled_back_at_a_safe_point(app, manager, listener):
    assert client.push(listener.address, update_script(manager), timeout=WAIT)["ok"]
    assert app.wait_for(lambda a: a.last == "v2")
    reply = client.rollback(listener.address, timeout=WAIT)
    assert reply == {"ok": True, "script_error": None, "not_reverted": [], "updates": [
        {"name": "revert greet v2", "state": "applied", "finished": True, "error": None}]}
    assert app.wait_for(lambda a: a.last == "v1")  # the old reference runs the old code again
    [*_, pushed, revert] = manager.history()
    assert (pushed.name, revert.name, revert.state) == ("greet v2", "revert greet v2", "applied")
    assert revert.pause is not None  # the worker was held while it applied
    with pytest.raises(RevertError, match="nothing to roll back: no update applied by the last "
                                          "4 pushes is still applied"):
        client.rollback(listener.address, timeout=WAIT)


def test_updates_are_reverted_by_name_newest_first(app, manager, listener):
    for version in (2, 3):
        assert client.push(listener.address, set_version(manager, version, f"v{version}"),
                           timeout=WAIT)["ok"]
    reply = client.rollback(listener.address, ["v2", "v3"], timeout=WAIT)
    assert [u["name"] for u in reply["updates"]] == ["revert v3", "revert v2"]
    assert reply["ok"] and app.module.VERSION == 1


def test_an_older_update_is_not_reverted_over_a_newer_one(app, manager, listener):
    for version in (2, 3):
        assert client.push(listener.address, set_version(manager, version, f"v{version}"),
                           timeout=WAIT)["ok"]
    reply = client.rollback(listener.address, ["v2"], timeout=WAIT)
    assert reply["ok"] is False and reply["not_reverted"] == ["v2"]
    [outcome] = reply["updates"]
    assert outcome["state"] == "rolled back"  # the revert changed nothing
    assert outcome["error"] == ("RevertError: cannot revert 'v2': 'v3' applied after it may "
                                "build on it; revert it first, newest first")
    assert app.module.VERSION == 3


def test_unknown_names_and_bad_requests_are_refused_in_a_sentence(app, manager, listener):
    assert client.push(listener.address, set_version(manager, 2, "known"), timeout=WAIT)["ok"]
    with pytest.raises(RevertError, match=r"nothing to roll back by the names 'nope', 'gone': "
                                          "the listener can revert only updates applied by its "
                                          "last 4 pushes and still applied"):
        client.rollback(listener.address, ["nope", "known", "gone"], timeout=WAIT)
    assert app.module.VERSION == 2  # nothing was reverted
    refused = client.request(listener.address, {"op": "rollback", "updates": "known"},
                             timeout=WAIT)
    assert refused == {"ok": False, "error": {
        "type": "ProtocolError",
        "message": "rollback's 'updates' must be null or a list of update names"}}
    with pytest.raises(PymoultTypeError, match="updates must be a list of update names"):
        client.rollback(listener.address, "known")
    with pytest.raises(PymoultValueError, match="name at least one update"):
        client.rollback(listener.address, [])
    with pytest.raises(PymoultValueError, match="a named pipe carries no reply"):
        client.rollback("pipe:/tmp/nowhere")


class ShortMemory(Listener):
    revertible_pushes = 2


def test_only_the_last_pushes_are_remembered(app, manager):
    with ShortMemory(manager=manager) as listener:
        for version in (2, 3, 4):
            assert client.push(listener.address, set_version(manager, version, f"v{version}"),
                               timeout=WAIT)["ok"]
        with pytest.raises(RevertError, match="by the name 'v2': .* its last 2 pushes"):
            client.rollback(listener.address, ["v2"], timeout=WAIT)
        assert client.rollback(listener.address, ["v4", "v3"], timeout=WAIT)["ok"]
    assert app.module.VERSION == 2


def test_the_rollback_request_is_validated():
    assert protocol.validate_request({"op": "rollback"})["updates"] is None
    for bad in ([], [""], [3], "name", {"a": 1}):
        with pytest.raises(ProtocolError, match="'updates' must be null or a list"):
            protocol.validate_request({"op": "rollback", "updates": bad})
