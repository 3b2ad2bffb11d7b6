"""The update listener: pushing scripts, replies, status and history, addresses, logging."""

import gc
import linecache
import logging
import os
import re
import socket
import stat
import struct
import sys
import tempfile
import threading
import traceback as traceback_module
import types

import pytest

from listening import (APP, MARKER_SCRIPT, WAIT, App, LogWatcher, connect, error_type, exchange,
                       frame, read_reply, send_request, update_script)
from pymoult import client, protocol
from pymoult.errors import (ListenerError, ListenerTimeoutError, ProtocolError,
                            PymoultTypeError, PymoultValueError, ThreadStateError,
                            UpdateTimeoutError)
from pymoult.delivery import socket_server
from pymoult.highlevel import listener as listener_module
from pymoult.highlevel.listener import (Listener, PipeListener, get_app_listener, log,
                                        set_logpath, set_loglevel)
from pymoult.highlevel.managers import Manager
from pymoult.highlevel.updates import EagerConversionUpdate, Update
from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.lowlevel.data_update import PROGRESS_BATCH
from pymoult.threads import DSU_Thread

pytestmark = pytest.mark.timeout(30)
TOKEN = "correct horse battery staple"


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    monkeypatch.delenv("PYMOULT_TOKEN", raising=False)
    monkeypatch.delenv("PYMOULT_ADDRESS", raising=False)


@pytest.fixture
def app(spawn):
    application = App(spawn.stop)
    spawn(application.thread)
    assert application.wait_for(lambda a: a.count >= 1)
    yield application
    application.close()
    assert not application.errors


@pytest.fixture
def listen():
    """``listen(**kwargs)`` starts a Listener, stopped (and checked stopped) at teardown."""
    started = []

    def start(*args, **kwargs):
        listener = Listener(*args, **kwargs).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        assert listener.stop(WAIT)


HELD_SCRIPT = """
import sys
from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import Update

app = sys.modules[{app!r}]

class Held(Update):
    def preupdate_setup(self):
        app.entered.set()
        app.gate.wait(10)
    def apply(self):
        pass

fetch_manager({manager!r}).add_update(Held("held"))
"""


def held_script(app, manager):
    app.module.gate, app.module.entered = threading.Event(), threading.Event()
    return HELD_SCRIPT.format(app=APP, manager=manager.name)


# -- push --------------------------------------------------------------------------------------

def test_push_over_unix_updates_a_running_thread(app, manager, listen):
    listener = listen(manager=manager)
    thread, before = app.thread, app.count
    reply = client.push(listener.address, update_script(manager), wait=True, timeout=WAIT)
    assert reply == {"ok": True, "script_error": None, "updates": [
        {"name": "greet v2", "state": "applied", "finished": True, "error": None}]}
    assert app.wait_for(lambda a: a.last == "v2")
    assert app.thread is thread and thread.is_alive() and app.count > before
    assert listener.applied_updates == ["greet v2"]


def test_push_over_tcp_with_a_token(app, manager, listen):
    listener = listen(address="tcp:127.0.0.1:0", token=TOKEN)
    assert re.fullmatch(r"tcp:127\.0\.0\.1:\d+", listener.address)
    assert not listener.address.endswith(":0")
    reply = client.push(listener.address, update_script(manager), token=TOKEN, timeout=WAIT)
    assert reply["ok"] and reply["updates"][0]["state"] == "applied"
    assert app.wait_for(lambda a: a.last == "v2")


def test_push_without_wait_replies_once_the_script_ran(app, manager, listen):
    listener = listen()
    reply = client.push(listener.address, held_script(app, manager), wait=False)
    assert reply == {"ok": True, "script_error": None, "updates": [
        {"name": "held", "state": "pending", "finished": False, "error": None}]}
    assert listener.applied_updates == []
    app.module.gate.set()
    assert manager.wait_current_update(WAIT)
    assert manager.history()[-1].state == "applied"
    assert listener.applied_updates == ["held"]


def test_waiting_past_the_timeout_reports_the_update_unfinished(app, manager, listen):
    listener = listen()
    try:
        reply = client.push(listener.address, held_script(app, manager), wait=True, timeout=0.2)
    finally:
        app.module.gate.set()
    assert reply == {"ok": False, "script_error": None, "updates": [
        {"name": "held", "state": "pending", "finished": False,
         "error": "not finished within 0.2 s"}]}
    assert manager.wait_current_update(WAIT)


def test_a_script_that_raises_is_reported_with_its_traceback(listen):
    listener = listen()
    reply = client.push(listener.address, "#parsed\nx = 1\nraise ValueError('boom')\n")
    assert reply["ok"] is False and reply["updates"] == []
    error = reply["script_error"]
    assert (error["type"], error["message"]) == ("ValueError", "boom")
    assert re.search(r'File "<pymoult update \d+>", line 3, in <module>\n'
                     r"    raise ValueError\('boom'\)", error["traceback"])
    assert "listener.py" not in error["traceback"]  # cut to the script's own frames


def test_a_syntax_error_is_a_script_error(listen):
    listener = listen()
    reply = client.push(listener.address, "def broken(:\n    pass\n")
    assert reply["ok"] is False and reply["updates"] == []
    assert reply["script_error"]["type"] == "SyntaxError"
    assert "<pymoult update" in reply["script_error"]["traceback"]


def test_a_failing_update_is_rolled_back_and_reported(app, manager, listen):
    listener = listen()
    script = update_script(manager).replace("SafeRedefineUpdate(app", "Failing(app").replace(
        "\nfetch_manager(", "\nclass Failing(SafeRedefineUpdate):\n"
        "    def apply(self):\n"
        "        super().apply()\n"
        "        raise RuntimeError('half done')\n\n"
        "fetch_manager(")
    reply = client.push(listener.address, script, timeout=WAIT)
    assert reply == {"ok": False, "script_error": None, "updates": [
        {"name": "greet v2", "state": "rolled back", "finished": True,
         "error": "RuntimeError: half done"}]}
    seen = app.count
    assert app.wait_for(lambda a: a.count > seen + 2)
    assert app.last == "v1" and app.module.greet() == "v1"
    assert listener.applied_updates == []


def source_cached(number):
    """Whether linecache still has script ``number``'s source, once its thread has ended and
    the garbage it left is collected."""
    for thread in threading.enumerate():
        if thread.name == f"pymoult-update-{number}":
            thread.join(WAIT)
    gc.collect()
    return f"<pymoult update {number}>" in linecache.cache


def test_a_script_source_is_cached_for_the_reply_then_dropped(listen):
    listener = listen()
    reply = client.push(listener.address, "def helper():\n    raise KeyError('k')\nhelper()\n")
    traceback = reply["script_error"]["traceback"]
    assert "    raise KeyError('k')" in traceback and "    helper()" in traceback  # lines shown
    number = int(re.search(r"<pymoult update (\d+)>", traceback).group(1))
    assert not source_cached(number)  # nothing compiled from it is alive any more
    syntax = client.push(listener.address, "def broken(:\n")["script_error"]["traceback"]
    assert not source_cached(int(re.search(r"<pymoult update (\d+)>", syntax).group(1)))


def test_a_script_source_stays_while_its_code_runs_in_the_application(app, listen):
    listener = listen()
    reply = client.push(listener.address, (
        "import sys\n"
        "def check(n):\n"
        "    if n < 0:\n"
        "        raise ValueError('negative')\n"
        "    return n\n"
        f"sys.modules[{APP!r}].check = check\n"
        f"sys.modules[{APP!r}].number = int(__name__.rsplit('_', 1)[1])\n"))
    assert reply["ok"], reply
    number = app.module.number
    assert source_cached(number)  # the script ended, its function lives on
    with pytest.raises(ValueError) as caught:
        app.module.check(-1)
    text = "".join(traceback_module.format_exception(caught.type, caught.value, caught.tb))
    assert (f'File "<pymoult update {number}>", line 4, in check\n'
            "    raise ValueError('negative')\n") in text
    del caught, app.module.check
    assert not source_cached(number)


def test_the_script_runs_in_its_own_thread_with_main_reachable(listen):
    listener = listen()
    seen = {}
    listener_module._test_seen = seen
    try:
        reply = client.push(listener.address, (
            "import sys, threading\n"
            "from pymoult.highlevel import listener\n"
            "listener._test_seen.update(thread=threading.current_thread().name,\n"
            "    main=sys.modules['__main__'], name=__name__, names=sorted(globals()))\n"))
    finally:
        del listener_module._test_seen
    assert reply["ok"], reply
    assert re.fullmatch(r"pymoult-update-\d+", seen["thread"])
    assert seen["main"] is __import__("sys").modules["__main__"]
    assert re.fullmatch(r"pymoult_update_\d+", seen["name"])
    assert set(seen["names"]) == {"__builtins__", "__name__", "listener", "sys", "threading"}


def test_a_script_still_running_at_the_timeout_is_reported(app, listen):
    listener = listen()
    app.module.gate = threading.Event()
    script = f"import sys\nsys.modules[{APP!r}].gate.wait(10)\n"
    try:
        reply = client.push(listener.address, script, timeout=0.2)
    finally:
        app.module.gate.set()
    assert reply["ok"] is False and reply["updates"] == []
    assert reply["script_error"]["type"] == "TimeoutError"
    assert re.match(r"the script was still running after 0\.2 s \(it goes on in thread "
                    r"'pymoult-update-\d+': Python cannot stop a thread\)$",
                    reply["script_error"]["message"])
    for thread in threading.enumerate():
        if thread.name.startswith("pymoult-update-"):
            thread.join(WAIT)


# -- clients that go away while a push is served ---------------------------------------------

def push_frame(script, **fields):
    return frame({"op": "push", "script": script, "wait": True, "timeout": None, **fields})


@pytest.mark.parametrize("transport, leave, why", [
    ("unix", "close", "closed the connection"),
    ("tcp", "close", "ended its side of the TCP connection"),
    ("tcp", "shutdown", "ended its side of the TCP connection"),  # TCP cannot tell them apart
])
def test_a_client_gone_while_waiting_frees_its_slot_and_the_update_goes_on(
        app, manager, listen, transport, leave, why):
    tcp = transport == "tcp"
    listener = listen(**({"address": "tcp:127.0.0.1:0", "token": TOKEN} if tcp else {}))
    listener.max_push_wait = 300.0  # far beyond this test's waits: only the departure frees it
    with connect(listener.address) as sock, LogWatcher() as log_records:
        send_request(sock, {"op": "push", "script": held_script(app, manager), "wait": True,
                            "timeout": None}, TOKEN if tcp else None)
        try:
            assert app.module.entered.wait(WAIT)  # the manager runs the update, the push waits
            assert listener.connections == 1 and not listener.wait_idle(0)
            if leave == "shutdown":
                sock.shutdown(socket.SHUT_WR)
            else:
                sock.close()
            assert listener.wait_idle(WAIT)  # the slot is free though the update is not done
            assert log_records.wait_for(f"{why}")
            assert manager.current_update.name == "held"  # not cancelled: it was accepted
            if leave == "shutdown":
                assert read_reply(sock) is None  # the listener closed without a reply
        finally:
            app.module.gate.set()
    assert manager.wait_current_update(WAIT)
    assert manager.history()[-1].state == "applied"
    assert listener.applied_updates == ["held"]  # still recorded
    assert any("its updates go on (ask for status)" in m for m in log_records.messages)


def test_a_client_gone_while_its_script_runs_frees_its_slot(app, listen):
    listener = listen()
    app.module.gate, app.module.entered = threading.Event(), threading.Event()
    script = f"import sys\nsys.modules[{APP!r}].entered.set()\nsys.modules[{APP!r}].gate.wait(10)\n"
    try:
        with connect(listener.address) as sock:
            sock.sendall(push_frame(script))
            assert app.module.entered.wait(WAIT)
        assert listener.wait_idle(WAIT)
    finally:
        app.module.gate.set()
    for thread in threading.enumerate():
        if thread.name.startswith("pymoult-update-"):
            thread.join(WAIT)


@pytest.fixture
def watch_checks(monkeypatch):
    """A Condition whose ``count`` is the number of times a push checked its client."""
    checked = threading.Condition()
    checked.count = 0
    check = socket_server._ClientWatch.__call__

    def counted(watch):
        gone = check(watch)
        with checked:
            checked.count += 1
            checked.notify_all()
        return gone

    monkeypatch.setattr(socket_server._ClientWatch, "__call__", counted)
    return checked


def test_a_unix_client_that_only_ends_its_sending_side_still_gets_the_outcome(
        app, manager, listen, watch_checks):
    listener = listen()
    with connect(listener.address) as sock:
        sock.sendall(push_frame(held_script(app, manager)) + b"trailing bytes are dropped")
        try:
            assert app.module.entered.wait(WAIT)
            sock.shutdown(socket.SHUT_WR)
            with watch_checks:  # the push saw the end of its input, and kept waiting
                seen = watch_checks.count
                assert watch_checks.wait_for(lambda: watch_checks.count >= seen + 2, WAIT)
            assert listener.connections == 1
        finally:
            app.module.gate.set()
        reply = read_reply(sock)
    assert reply == {"ok": True, "script_error": None, "updates": [
        {"name": "held", "state": "applied", "finished": True, "error": None}]}


def test_a_client_flooding_after_its_request_is_let_go(app, manager, listen):
    listener = listen(max_size=4096)
    with connect(listener.address) as sock, LogWatcher() as log_records:
        sock.sendall(push_frame(held_script(app, manager)))
        try:
            assert app.module.entered.wait(WAIT)
            sock.sendall(b"x" * 5000)
            assert listener.wait_idle(WAIT)
            assert log_records.wait_for("sent over 4096 bytes after its request")
        finally:
            app.module.gate.set()
    assert manager.wait_current_update(WAIT)
    assert manager.history()[-1].state == "applied"


# -- status and history ------------------------------------------------------------------------

def test_status_and_history_report_the_managers(app, manager, listen):
    listener = listen(manager=manager)
    assert client.push(listener.address, update_script(manager), timeout=WAIT)["ok"]
    status = client.status(listener.address)
    assert status["ok"] is True
    assert isinstance(status["listener"].pop("scripts"), list)  # the process's (see
    # tests/test_bounded_history.py)
    # the status request's own connection, maybe the push's until it has closed
    assert status["listener"].pop("connections") in (1, 2)
    assert status["listener"] == {"name": "Pymoult Listener", "address": listener.address,
                                  "applied_updates": ["greet v2"], "applied_total": 1,
                                  "pending": 0}
    [reported] = status["managers"]
    assert reported["name"] == manager.name and reported["kind"] == "ThreadedManager"
    assert reported["current"] is None and reported["pending"] == []
    assert reported["statistics"]["finished"] == {"applied": 1}
    assert reported["statistics"]["queued"] == 0
    history = client.history(listener.address)
    [entry] = history["managers"]
    [record] = entry["history"]
    assert entry["name"] == manager.name and entry["forgotten"] == {}
    assert record["name"] == "greet v2" and record["state"] == "applied"
    assert record["error"] is None and record["operations"]
    assert record == manager.history()[0].as_dict()


def test_status_shows_the_update_in_progress(app, manager, listen):
    listener = listen(manager=manager.name)  # a manager may be named
    client.push(listener.address, held_script(app, manager), wait=False)
    try:
        assert app.module.entered.wait(WAIT)  # the manager is running it
        [reported] = client.status(listener.address)["managers"]
        assert reported["current"] == {
            "name": "held", "state": "pending", "tries": 0, "max_tries": 10, "postponements": 0,
            "waited": None, "patience": 10 * 0.1, "progress": None}
    finally:
        app.module.gate.set()
    assert manager.wait_current_update(WAIT)


OLD_POINT = "class Point:\n    def __init__(self, x):\n        self.x = x\n"
NEW_POINT = OLD_POINT + "    def norm(self):\n        return abs(self.x)\n"


def test_status_counts_the_objects_an_eager_conversion_has_done(manager, listen):
    listener = listen(manager=manager)
    module = types.ModuleType("listener_convert_app")
    exec(OLD_POINT, module.__dict__)
    new = {"__name__": "listener_convert_app"}
    exec(NEW_POINT, new)
    points = [module.Point(i) for i in range(2 * PROGRESS_BATCH + 100)]
    calls, reached, gate = [], threading.Event(), threading.Event()

    def transformer(point):
        calls.append(point)
        if len(calls) == PROGRESS_BATCH + 10:  # in the second batch: hold it there
            reached.set()
            gate.wait(WAIT)
        point.y = 0

    update = EagerConversionUpdate(module.Point, new["Point"], transformer, module=module)
    future = manager.add_update(update)
    try:
        assert reached.wait(WAIT)
        [reported] = client.status(listener.address)["managers"]
    finally:
        gate.set()
    current = reported["current"]
    assert current["name"] == "convert Point" and current["state"] == "applying"
    assert current["progress"] == {"step": "transform instances of listener_convert_app.Point",
                                   "done": PROGRESS_BATCH, "total": len(points)}
    assert future.result(WAIT) is update
    assert all(p.y == 0 for p in points) and points[0].norm() == 0


class Patient(Update):
    """An update that says when it starts waiting for alterability, and changes nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waiting = threading.Event()

    def check_alterability(self):
        self.waiting.set()
        return super().check_alterability()

    def wait_alterability(self):
        self.waiting.set()
        return super().wait_alterability()

    def apply(self):
        pass


def test_status_tells_how_long_an_update_has_waited_for_alterability(manager, listen, spawn):
    listener = listen(manager=manager)
    go = threading.Event()

    def late():  # reaches its update points only once told to
        go.wait(WAIT)
        while not spawn.stop.is_set():
            staticUpdatePoint()

    update = Patient("patient", threads=[spawn(DSU_Thread(target=late))], max_tries=1000,
                     sleep_time=0.01)
    future = manager.add_update(update)
    try:
        assert update.waiting.wait(WAIT)
        [reported] = client.status(listener.address)["managers"]
    finally:
        go.set()
    current = reported["current"]
    assert current["state"] == "waiting for alterability"
    assert (current["tries"], current["max_tries"], current["postponements"]) == (1, 1000, 0)
    assert current["patience"] == 1000 * 0.01 and current["progress"] is None
    assert isinstance(current["waited"], float) and current["waited"] >= 0
    assert future.result(WAIT) is update


def test_status_counts_the_tries_of_a_polling_manager(listen, spawn):
    polled = Manager("polled")
    listener = listen(manager=polled)
    never = spawn(DSU_Thread(target=spawn.stop.wait, args=(WAIT,)))  # never at a point
    update = Patient("polled update", threads=[never], max_tries=5)
    update.suspension, update.on_timeout = "points", "fail"  # waits for a point, never reached
    future = polled.add_update(update)
    for _ in range(4):
        polled.apply_next_update()
    [reported] = client.status(listener.address)["managers"]
    current = reported["current"]
    assert current["state"] == "waiting for alterability"
    assert current["tries"] == update.tries >= 2 and current["max_tries"] == 5
    for _ in range(10):
        if future.done():
            break
        polled.apply_next_update()
    with pytest.raises(UpdateTimeoutError, match="not alterable after 5 tries"):
        future.result(0)


def test_status_without_a_manager_reports_every_live_one(manager, listen):
    listener = listen()
    names = [m["name"] for m in client.status(listener.address)["managers"]]
    assert manager.name in names


# -- addresses and life ------------------------------------------------------------------------

def test_the_default_address_is_a_unix_socket(listen):
    listener = listen()
    assert re.fullmatch(r"unix:/.+/pymoult-[^/]+/listener\.sock", listener.address)
    assert stat.S_ISSOCK(os.lstat(listener.address[5:]).st_mode)


def test_the_original_port_argument_means_tcp_on_loopback(listen):
    listener = listen("legacy", True, 0, token=TOKEN)
    assert re.fullmatch(r"tcp:127\.0\.0\.1:\d+", listener.address)
    assert listener.name == "legacy"
    assert client.status(listener.address, token=TOKEN)["ok"]


def test_ipv6_loopback(listen):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        listener = listen(address="tcp:[::1]:0", token=TOKEN)
    except PymoultValueError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert re.fullmatch(r"tcp:\[::1\]:\d+", listener.address)
    assert client.status(listener.address, token=TOKEN)["ok"]


def test_an_explicit_unix_path(tmp_path, listen):
    path = tmp_path / "app.sock"
    listener = listen(address=f"unix:{path}")
    assert listener.address == f"unix:{path}"
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["app.sock"]  # no staging left behind
    with pytest.raises(PymoultValueError, match=r"another listener serves it$"):
        Listener(address=f"unix:{path}")
    assert client.status(listener.address)["ok"]


def test_a_stale_socket_is_replaced_and_other_files_are_not(tmp_path, listen):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()  # the file stays, nobody listens
    listener = listen(address=f"unix:{tmp_path / 'stale.sock'}")
    assert client.status(listener.address)["ok"]
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(PymoultValueError, match=r"the path exists and is not a socket$"):
        Listener(address=f"unix:{tmp_path / 'file'}")
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize("address, message", [
    ("http://host", r"expected 'unix:/path' or 'tcp:host:port'"),
    ("tcp:host", r"expected 'tcp:host:port' \(the port is missing\)"),
    ("tcp:host:", r"the port must be a number from 0 to 65535"),
    ("tcp:host:99999", r"the port must be a number from 0 to 65535"),
    ("tcp::80", r"expected 'tcp:host:port' with a host"),
    ("tcp:::1:80", r"write an IPv6 host in brackets"),
    ("tcp:[::1]80", r"expected 'tcp:\[v6 address\]:port'"),
    ("unix:", r"'unix:' needs a file path"),
])
def test_bad_addresses_are_refused_clearly(address, message):
    with pytest.raises(PymoultValueError, match=rf"^bad address {re.escape(repr(address))}: "
                                                 rf"{message}"):
        protocol.parse_address(address)


def path_of(directory, size):
    """A path of ``size`` bytes: a file name in ``directory`` padded to that length."""
    path = os.path.join(directory, "s" * (size - len(os.fsencode(str(directory))) - 1))
    assert len(os.fsencode(path)) == size
    return path


def test_a_unix_path_too_long_for_sun_path_is_refused_when_read(tmp_path):
    limit = protocol.MAX_UNIX_PATH
    assert limit == 107 or not sys.platform.startswith("linux")
    too_long = path_of(tmp_path, limit + 1)
    message = (rf"the path is {limit + 1} bytes long, over the limit of {limit} bytes for a "
               rf"Unix socket \(sun_path holds {limit + 1} with the final NUL\)")
    address = f"unix:{too_long}"
    with pytest.raises(PymoultValueError, match=rf"^bad address {re.escape(repr(address))}: "
                                                 rf"{message}; choose a shorter path$"):
        protocol.parse_address(f"unix:{too_long}")
    with pytest.raises(PymoultValueError, match=rf"^cannot use unix:{re.escape(too_long)}: "
                                                 rf"{message}$"):
        protocol.Address("unix", path=too_long)
    assert protocol.parse_address(f"unix:{path_of(tmp_path, limit)}").path == path_of(tmp_path,
                                                                                       limit)


def test_a_listener_refuses_a_unix_path_too_long_and_serves_one_at_the_limit(tmp_path, listen):
    limit = protocol.MAX_UNIX_PATH
    with pytest.raises(PymoultValueError, match=rf"bytes long, over the limit of {limit} bytes"):
        Listener(address=f"unix:{path_of(tmp_path, limit + 1)}")
    assert list(tmp_path.iterdir()) == []  # nothing bound, nothing staged
    with pytest.raises(PymoultValueError, match=rf"bytes long, over the limit of {limit} bytes"):
        client.status(f"unix:{path_of(tmp_path, limit + 1)}")  # the client says so too
    listener = listen(address=f"unix:{path_of(tmp_path, limit)}")
    assert client.status(listener.address)["ok"]


def test_a_path_whose_staging_would_be_too_long_is_refused_clearly(tmp_path):
    limit = protocol.MAX_UNIX_PATH
    directory = path_of(tmp_path, limit - 7)  # room for the socket's name, not for staging
    os.mkdir(directory)
    path = os.path.join(directory, "app.s")
    with pytest.raises(PymoultValueError, match=(
            rf"^cannot listen on unix:{re.escape(path)}: the socket is bound first at "
            rf"{re.escape(directory)}/\.p\w+/s, which is {limit + 6} bytes long, over the "
            rf"limit of {limit} bytes .*; choose a path in a directory with a shorter name$")):
        Listener(address=f"unix:{path}")
    assert os.listdir(directory) == []  # the staging directory is gone


def test_a_default_socket_path_too_long_names_the_remedy(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    deep = path_of(tmp_path, protocol.MAX_UNIX_PATH - 20)
    os.mkdir(deep)
    monkeypatch.setattr(tempfile, "tempdir", deep)
    with pytest.raises(PymoultValueError, match=r"^cannot listen on unix:.+/listener\.sock: the "
                                                r"path is \d+ bytes long, .*; set TMPDIR"):
        Listener()
    assert os.listdir(deep) == []  # the private directory is removed


def test_addresses_round_trip():
    for text in ["unix:/run/app.sock", "tcp:127.0.0.1:4242", "tcp:[::1]:80", "tcp:localhost:0"]:
        assert str(protocol.parse_address(text)) == text


def test_stop_removes_the_socket_and_its_directory():
    listener = Listener().start()
    path = listener.address[5:]
    assert get_app_listener() is listener
    assert listener.stop(WAIT)
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    assert get_app_listener() is None
    assert listener.stop(WAIT)  # twice is harmless
    with pytest.raises(ThreadStateError, match=r"was stopped: create a new listener$"):
        listener.start()
    with pytest.raises(ListenerError, match=rf"^no listener at unix:{re.escape(path)}: "):
        client.status(listener.address)


def test_a_listener_never_started_cleans_up_too():
    listener = Listener()
    path = listener.address[5:]
    assert os.path.exists(path)
    assert listener.stop(WAIT)
    assert not os.path.exists(os.path.dirname(path))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"max_connections": 0}, PymoultValueError, r"max_connections must be positive"),
    ({"max_connections": 1.5}, PymoultTypeError, r"max_connections must be a positive int"),
    ({"read_timeout": -1}, PymoultValueError, r"read_timeout must be positive"),
    ({"idle_timeout": float("inf")}, PymoultValueError, r"idle_timeout must be positive"),
    ({"auth_timeout": 0}, PymoultValueError, r"auth_timeout must be positive"),
    ({"max_size": 2 ** 32}, PymoultValueError, r"max_size must be at most 4294967295"),
    ({"token": ""}, PymoultValueError, r"token must not be empty"),
    ({"token": "a", "token_file": "f"}, PymoultValueError, r"give token or token_file"),
    ({"localhost": False}, PymoultValueError, r"localhost=False only applies to TCP"),
    ({"address": "tcp:127.0.0.1:0", "port": 0, "token": TOKEN}, PymoultValueError,
     r"give address or port"),
    ({"manager": 3}, PymoultTypeError, r"manager must be a Manager"),
])
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        Listener(**kwargs)


# -- client errors -----------------------------------------------------------------------------

def test_the_client_takes_address_and_token_from_the_environment(monkeypatch, listen):
    listener = listen(address="tcp:127.0.0.1:0", token=TOKEN)
    monkeypatch.setenv("PYMOULT_ADDRESS", listener.address)
    monkeypatch.setenv("PYMOULT_TOKEN", TOKEN)
    assert client.status(None)["listener"]["address"] == listener.address


def test_the_client_needs_an_address():
    with pytest.raises(PymoultValueError, match=r"^no listener address: pass one or set "
                                                r"PYMOULT_ADDRESS"):
        client.status(None)


def test_the_client_names_the_address_it_could_not_reach():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    with pytest.raises(ListenerError, match=rf"^cannot connect to the listener at "
                                            rf"tcp:127\.0\.0\.1:{port}: ") as caught:
        client.status(f"tcp:127.0.0.1:{port}")
    assert caught.value.address == f"tcp:127.0.0.1:{port}"


def test_the_client_times_out_on_a_silent_listener():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        address = f"tcp:127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ListenerTimeoutError, match=rf"^no reply from the listener at "
                                                       rf"{re.escape(address)} within 0\.2 s"):
            client.status(address, timeout=0.2)
    finally:
        silent.close()


def test_raw_request_returns_refusals_as_replies(listen):
    listener = listen()
    reply = client.request(listener.address, {"op": "dance"})
    assert reply == {"ok": False, "error": {
        "type": "ProtocolError",
        "message": "unknown op 'dance': expected one of "
                   "push, status, history, rollback, commit, abort"}}
    with connect(listener.address) as sock:
        sock.sendall(frame({"op": "status"}))
        assert read_reply(sock)["ok"] is True


# -- the pipe ----------------------------------------------------------------------------------

def test_pipe_listener_runs_scripts_and_logs_refusals(tmp_path, app, manager, caplog):
    caplog.set_level(logging.INFO, "pymoult")
    path = tmp_path / "fifopipe"
    pipe = PipeListener(str(path), read_timeout=WAIT).start()
    try:
        assert stat.S_ISFIFO(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, frame({"op": "status"}) + b"\x00\x00\x00\x02{]"
                     + frame({"op": "push", "script": update_script(manager)}))
        finally:
            os.close(fd)
        assert app.wait_for(lambda a: a.last == "v2")
        assert manager.wait_current_update(WAIT)
    finally:
        assert pipe.stop(WAIT)
    assert not path.exists()
    assert pipe.applied_updates == ["greet v2"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("a pipe takes push requests only" in w for w in warnings)
    assert any("refused a frame: the frame is not JSON" in w for w in warnings)


def test_pipe_listener_refuses_a_pipe_others_can_open(tmp_path):
    path = tmp_path / "open.fifo"
    os.mkfifo(path, 0o600)
    os.chmod(path, 0o622)
    with pytest.raises(PymoultValueError, match=r"must be a named pipe owned by uid \d+ with "
                                                r"mode 0600 \(found mode 0622"):
        PipeListener(str(path))


def test_pipe_listener_drops_oversized_and_stalled_frames(tmp_path):
    path, marker = tmp_path / "fifo", tmp_path / "ran"
    pipe = PipeListener(str(path), max_size=512, read_timeout=0.2).start()
    fd = os.open(path, os.O_WRONLY)
    try:
        with LogWatcher() as log_records:
            os.write(fd, b"\xff\xff\xff\xff" + b"x" * 100)
            assert log_records.wait_for("frame of 4294967295 bytes is over the limit of 512 "
                                        "bytes: dropped it and what followed it")
            os.write(fd, b"\x00\x00\x00\x10{")  # a frame that never completes
            assert log_records.wait_for("dropped an incomplete frame (5 bytes) after a stall")
            listener_module._test_done = done = threading.Event()
            os.write(fd, frame({"op": "push", "script": MARKER_SCRIPT.format(path=str(marker))
                                + "from pymoult.highlevel import listener\n"
                                  "listener._test_done.set()\n"}))
            assert done.wait(WAIT)
    finally:
        os.close(fd)
        listener_module.__dict__.pop("_test_done", None)
        assert pipe.stop(WAIT)
    assert marker.exists()


def test_a_frame_buffer_gives_each_frame_its_own_deadline():
    buffer = protocol.FrameBuffer(max_size=100, timeout=10.0)
    first, second = frame({"n": 1}), frame({"n": 2})
    assert buffer.deadline is None
    buffer.feed(first[:3], now=100.0)
    assert list(buffer.frames()) == [] and buffer.deadline == 110.0
    buffer.feed(first[3:] + second[:2], now=108.0)  # the first ends, the second begins
    assert [protocol.decode_payload(p) for p in buffer.frames()] == [{"n": 1}]
    assert buffer.deadline == 118.0  # its own, from its first byte: not the first's 110
    buffer.feed(second[2:5], now=112.0)
    assert list(buffer.frames()) == [] and buffer.deadline == 118.0  # dribbling: no extension
    buffer.feed(second[5:], now=115.0)
    assert [protocol.decode_payload(p) for p in buffer.frames()] == [{"n": 2}]
    assert buffer.deadline is None and len(buffer) == 0


def test_a_frame_buffer_drops_everything_at_an_oversized_frame():
    buffer = protocol.FrameBuffer(max_size=100, timeout=10.0)
    buffer.feed(frame({"n": 1}) + struct.pack(">I", 101) + b"x" * 50, now=0.0)
    frames = buffer.frames()
    assert protocol.decode_payload(next(frames)) == {"n": 1}  # what came before is served
    with pytest.raises(ProtocolError, match=r"^frame of 101 bytes is over the limit of 100 "
                                            r"bytes$"):
        next(frames)
    assert len(buffer) == 0 and buffer.deadline is None
    buffer.feed(b"", now=1.0)
    assert buffer.deadline is None  # nothing arrived: no frame in progress


def test_pipe_listener_serves_a_frame_that_begins_with_the_end_of_another(tmp_path):
    path = tmp_path / "fifo"
    pipe = PipeListener(str(path), read_timeout=WAIT).start()
    listener_module._test_ran = ran = []
    done = threading.Event()
    listener_module._test_done = done
    script = ("from pymoult.highlevel import listener\n"
              "listener._test_ran.append({n})\n"
              "if len(listener._test_ran) == 2:\n"
              "    listener._test_done.set()\n")
    first = frame({"op": "push", "script": script.format(n=1)})
    second = frame({"op": "push", "script": script.format(n=2)})
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, first + second[:7])
        os.write(fd, second[7:])
        assert done.wait(WAIT)
    finally:
        os.close(fd)
        listener_module.__dict__.pop("_test_ran", None)
        listener_module.__dict__.pop("_test_done", None)
        assert pipe.stop(WAIT)
    assert sorted(ran) == [1, 2]


# -- the original's logging functions --------------------------------------------------------

@pytest.fixture
def restore_logging():
    logger = logging.getLogger("pymoult")
    level = logger.level
    yield logger
    set_logpath(None)
    logger.setLevel(level)


def test_log_levels_and_log_file(tmp_path, restore_logging):
    logger = restore_logging
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    set_logpath(first)
    set_loglevel(2)
    log(0, "application message")
    log(2, "detail message")
    set_loglevel(0)
    log(1, "hidden at level 0")
    log(0, "shown at level 0")
    set_logpath(second)
    log(0, "in the second file")
    files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    assert len(files) == 1 and files[0].baseFilename == str(second)
    set_logpath(None)
    assert not [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    text = first.read_text()
    assert "WARNING" in text and "application message" in text and "detail message" in text
    assert "shown at level 0" in text and "hidden at level 0" not in text
    assert "in the second file" not in text
    assert "in the second file" in second.read_text()


@pytest.mark.parametrize("level, error", [(3, PymoultValueError), ("2", PymoultTypeError),
                                          (True, PymoultTypeError)])
def test_bad_log_levels_are_refused(level, error, restore_logging):
    with pytest.raises(error, match=r"a log level must be 0"):
        log(level, "x")
    with pytest.raises(error, match=r"a log level must be 0"):
        set_loglevel(level)


def test_refusals_are_logged_as_warnings(listen, caplog):
    listener = listen()
    with caplog.at_level(logging.WARNING, "pymoult"):
        reply = exchange(listener.address, b"\x00\x00\x00\x03abc")
    assert error_type(reply) == "ProtocolError"
    assert re.search(r"refused connection \d+ from uid \d+ pid \d+: the frame is not JSON",
                     caplog.text)  # the peer named


def test_a_pipe_listener_is_the_app_listener_while_it_runs(tmp_path):
    listener = PipeListener(str(tmp_path / "fifo")).start()
    try:
        assert get_app_listener() is listener
    finally:
        assert listener.stop(WAIT)
    assert get_app_listener() is None
