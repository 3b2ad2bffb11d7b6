"""Tests of pymoult._cpython's frame snapshot and collector pause (CPython 3.11's gh-106883)."""

import ast
import gc
import json
import os
import pathlib
import select
import subprocess
import sys
import threading
import warnings

import pytest

from pymoult import _cpython

from app_process import WAIT, command_env

T = 5.0  # seconds: every wait of these tests is bounded by this
PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pymoult"


@pytest.fixture
def parked():
    """``parked(n)`` starts n threads that park 10 calls deep; they end with the test. Their top
    frames have no frame object yet (3.11 creates them lazily): the next snapshot allocates them."""
    stop = threading.Event()
    threads = []

    def start(n):
        barrier = threading.Barrier(n + 1)

        def deep(k):
            if k:
                return deep(k - 1)
            barrier.wait(T)
            stop.wait(T)

        for _ in range(n):
            threads.append(threading.Thread(target=deep, args=(10,), daemon=True))
            threads[-1].start()
        barrier.wait(T)
        return threads[-n:]

    yield start
    stop.set()
    for t in threads:
        t.join(T)
    assert not any(t.is_alive() for t in threads)


class CollectionsInside:
    """Records the cyclic collections that start while this thread is inside a C call of
    ``sys._current_frames`` (seen through ``sys.setprofile``), with the collector made to start at
    every other allocation. On 3.12+ a collection pending at the end of the call runs when the next
    Python function starts, here the profile function itself: those are not inside the call."""

    def __init__(self):
        self.inside = False
        self.hits = []

    def _profile(self, frame, event, arg):
        if arg is sys._current_frames:
            self.inside = event == "c_call"

    def _on_gc(self, phase, info):
        if phase == "start" and self.inside:
            caller = sys._getframe(1)
            if caller.f_code is not self._profile.__func__.__code__:
                self.hits.append(caller.f_code.co_name)

    def __enter__(self):
        self.threshold = gc.get_threshold()
        gc.callbacks.append(self._on_gc)
        gc.set_threshold(1)
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        gc.set_threshold(*self.threshold)
        gc.callbacks.remove(self._on_gc)
        return False


@pytest.mark.timeout(30)
def test_no_collection_starts_inside_current_frames(parked):
    """The deadlock's first step cannot happen: no collection (whose callbacks and finalizers run
    Python code, which may give the GIL away) starts while ``sys._current_frames`` holds the
    runtime's thread-list lock."""
    assert gc.isenabled()
    for _ in range(3):
        parked(4)
        with CollectionsInside() as probe:
            frames = _cpython.current_frames()
        assert probe.hits == []
        assert gc.isenabled()
        del frames


PROBE_PLAIN_CALL = """
import sys, threading
sys.path.insert(0, {tests!r})
from test_cpython import CollectionsInside
barrier, stop = threading.Barrier(5), threading.Event()
def deep(k):
    if k:
        return deep(k - 1)
    barrier.wait(5)
    stop.wait(5)
threads = [threading.Thread(target=deep, args=(10,)) for _ in range(4)]
for t in threads:
    t.start()
barrier.wait(5)
with CollectionsInside() as probe:
    frames = sys._current_frames()
stop.set()
for t in threads:
    t.join(5)
print(len(probe.hits))
"""


@pytest.mark.timeout(30)
@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="CPython 3.11 only creates frames under the lock")
def test_the_probe_sees_a_collection_inside_plain_sys_current_frames_on_3_11():
    """The probe of the test above is able to fail: unguarded, 3.11 collects inside the call. In
    a child process: that collection runs Python code while holding the lock, which is the very
    deadlock's first step."""
    code = PROBE_PLAIN_CALL.format(tests=str(pathlib.Path(__file__).resolve().parent))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0, \
        "no collection inside sys._current_frames: the probe proves nothing"


@pytest.mark.timeout(30)
def test_current_frames_is_sys_current_frames_seen_from_the_caller(parked):
    threads = parked(2)
    mine = _cpython.current_frames()
    theirs = sys._current_frames()
    here = sys._getframe()
    for t in threads:
        assert mine[t.ident] is theirs[t.ident]
    assert mine[threading.get_ident()] is here
    assert gc.isenabled()


def test_pause_gc_nests_and_restores_what_it_found():
    assert gc.isenabled()
    with _cpython.pause_gc():
        assert not gc.isenabled()
        with _cpython.pause_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
        assert gc.collect() >= 0  # an explicit collection still works
    assert gc.isenabled()
    gc.disable()
    try:
        with _cpython.pause_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()


def test_pause_gc_puts_back_what_it_found_whatever_the_code_inside_did():
    with _cpython.pause_gc():
        gc.disable()  # code inside turns it off: on again, as it was
    assert gc.isenabled()
    gc.disable()
    try:
        with _cpython.pause_gc():
            gc.enable()
        assert not gc.isenabled()  # it was off when the pause began: off again
    finally:
        gc.enable()


def test_pause_gc_restores_after_an_exception():
    with pytest.raises(KeyError):
        with _cpython.pause_gc():
            raise KeyError("x")
    assert gc.isenabled()


@pytest.mark.timeout(30)
def test_pause_gc_lasts_until_the_last_pause_of_any_thread_ends():
    entered, leave, left = threading.Event(), threading.Event(), threading.Event()

    def other():
        with _cpython.pause_gc():
            entered.set()
            leave.wait(T)
        left.set()

    t = threading.Thread(target=other, daemon=True)
    t.start()
    try:
        assert entered.wait(T)
        with _cpython.pause_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the other thread's pause is still open
        leave.set()
        assert left.wait(T)
        assert gc.isenabled()
    finally:
        leave.set()
        t.join(T)
    assert not t.is_alive()


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_pause_open_in_another_thread_at_fork_does_not_disable_the_childs_collector():
    entered, leave = threading.Event(), threading.Event()

    def other():
        with _cpython.pause_gc():
            entered.set()
            leave.wait(T)

    t = threading.Thread(target=other, daemon=True)
    t.start()
    read_end, write_end = os.pipe()
    try:
        assert entered.wait(T)
        assert not gc.isenabled()
        with warnings.catch_warnings():  # the child only checks the collector, then _exit()s
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            outcome = {}
            try:
                outcome["enabled"] = gc.isenabled()
                with _cpython.pause_gc():  # the lock is free: no thread of the parent holds it here
                    outcome["paused"] = not gc.isenabled()
                outcome["after"] = gc.isenabled()
            except BaseException as exc:
                outcome["error"] = repr(exc)
            finally:
                os.write(write_end, json.dumps(outcome).encode())
                os._exit(0)
        os.close(write_end)
        write_end = None
        try:
            ready, _, _ = select.select([read_end], [], [], T)
            assert ready, "the child did not answer"
            outcome = json.loads(os.read(read_end, 4096))
        finally:
            os.waitpid(pid, 0)
        assert outcome == {"enabled": True, "paused": True, "after": True}
        assert not gc.isenabled()  # the parent's pause is untouched
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
        leave.set()
        t.join(T)
    assert gc.isenabled()


class _SnapshotFinder(ast.NodeVisitor):
    """Collects the enclosing function name of every ``sys._current_frames`` in a module."""

    def __init__(self):
        self.where = ["<module>"]
        self.found = []

    def visit_FunctionDef(self, node):
        self.where.append(node.name)
        self.generic_visit(node)
        self.where.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Attribute(self, node):
        if node.attr == "_current_frames" and isinstance(node.value, ast.Name) \
                and node.value.id == "sys":
            self.found.append(self.where[-1])
        self.generic_visit(node)


def direct_uses_of_sys_current_frames():
    """(file, enclosing function) of every ``sys._current_frames`` in the package's code."""
    uses = []
    for path in sorted(PACKAGE.rglob("*.py")):
        finder = _SnapshotFinder()
        finder.visit(ast.parse(path.read_text()))
        uses += [(str(path.relative_to(PACKAGE)), name) for name in finder.found]
    return uses


def test_library_code_takes_frame_snapshots_through_current_frames():
    """Only _cpython touches sys._current_frames, and the ctypes backend's snapshot, called under a
    pause_gc() (it cannot wait for the pause's lock in the middle of its walk)."""
    allowed = {("_cpython.py", "current_frames"), ("_cpython.py", "<module>"),
               (os.path.join("_thread_trace", "ctypes_settrace.py"), "snapshot")}
    calls = direct_uses_of_sys_current_frames()
    assert ("_cpython.py", "current_frames") in calls  # the scan finds what it looks for
    assert set(calls) <= allowed, f"use _cpython.current_frames(): {sorted(set(calls) - allowed)}"


class _Moved:
    def __init__(self):
        self.n = 1


class _Elsewhere:
    pass


def test_unshare_instance_dict_copies_a_dict_nobody_else_holds():
    obj = _Moved()
    obj.__class__ = _Elsewhere
    obj.__class__ = _Moved
    before = vars(obj)
    copy = dict(before)
    del before  # the test's own reference would count as a holder
    assert _cpython.unshare_instance_dict(obj) is (sys.version_info >= (3, 11))
    assert vars(obj) == copy and obj.n == 1
    obj.m = 2
    assert vars(obj) == {"n": 1, "m": 2}


def test_unshare_instance_dict_leaves_a_held_dict_and_dictless_objects_alone():
    obj = _Moved()
    obj.__class__ = _Elsewhere
    obj.__class__ = _Moved
    held = vars(obj)
    assert _cpython.unshare_instance_dict(obj) is False
    obj.m = 2
    assert held is vars(obj) and held["m"] == 2

    class Slotted:
        __slots__ = ("n",)

    assert _cpython.unshare_instance_dict(Slotted()) is False
    assert _cpython.unshare_instance_dict(3) is False


# -- dict versions (PEP 509) -----------------------------------------------------------------------


def test_dict_version_is_kept_on_3_10_to_3_13():
    # the checks built on it (source_diff's record, the journal's watch) compare items when it
    # is None: it must be there on every version Pymoult supports
    if _cpython.PY_VERSION <= (3, 13):
        assert _cpython.dict_version({}) is not None
    with pytest.raises(TypeError):
        _cpython.dict_version(type("C", (), {}).__dict__)  # a mappingproxy: not a dict


@pytest.mark.skipif(_cpython.dict_version({}) is None, reason="no dict versions here")
def test_every_change_of_a_dict_gives_it_a_version_never_seen_and_reads_do_not():
    import types as types_module
    module = types_module.ModuleType("versioned")
    namespace = vars(module)
    module.a, module.b = 1, [2]
    other = {}
    seen = {_cpython.dict_version(namespace)}
    changes = [
        lambda: setattr(module, "a", 1000 + int("1")),  # rebound to another (equal) object
        lambda: setattr(module, "new", 3),
        lambda: delattr(module, "new"),
        lambda: namespace.update(c=4),
        lambda: namespace.setdefault("d", 5),
        lambda: namespace.pop("d"),
        lambda: exec("e = 6\ndef f(): pass\n", namespace),  # STORE_NAME, the builtins added
        lambda: exec(compile("global a\na = 7", "<m>", "exec"), namespace),  # STORE_GLOBAL
        lambda: namespace.__setitem__("x", 0),
        namespace.popitem,
        namespace.clear,
    ]
    for change in changes:
        change()
        version = _cpython.dict_version(namespace)
        assert version not in seen
        seen.add(version)
        # reading it, and changing another dict, leave it alone
        list(namespace.items()), namespace.get("a"), "a" in namespace, module.__dict__.copy()
        other["k"] = len(seen)
        assert _cpython.dict_version(namespace) == version
        seen.add(_cpython.dict_version(other))
    namespace["z"] = marker = object()
    version = _cpython.dict_version(namespace)
    namespace["z"] = marker  # bound again to the very same object: its items are as they were
    assert _cpython.dict_version(namespace) == version
    marker_list = namespace["z"] = [1]
    version = _cpython.dict_version(namespace)
    marker_list.append(2)  # a value changed inside, the dict's items are the same objects
    assert _cpython.dict_version(namespace) == version


@pytest.mark.timeout(60)
def test_a_python_running_without_the_gil_is_refused_at_import():
    probe = ("import sys\nsys._is_gil_enabled = lambda: False\n"
             "try:\n    import pymoult\nexcept ImportError as exc:\n    print(exc)\n"
             "else:\n    print('imported')\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=command_env(), timeout=WAIT)
    assert result.stdout.startswith("Pymoult needs the GIL, and this free-threaded Python runs "
                                    "without it")
    assert "PYTHON_GIL=1" in result.stdout


@pytest.mark.parametrize("statement", ["NAME: str = 'x'\n", "if True:\n    NAME: str\n"])
def test_a_statement_run_alone_gives_its_annotations_apart_from_3_14(statement):
    module: dict = {"LIMIT": 1}
    exec(compile("LIMIT: int = 1\n", "m", "exec"), module)  # the module's own annotations
    own = dict(module)
    exec(compile(statement, "m", "exec"), module)
    bound = {k: v for k, v in module.items() if v is not own.get(k)}
    evaluate = _cpython.take_statement_annotations(bound)
    if sys.version_info >= (3, 14):  # bound in place of the module's (PEP 649)
        assert evaluate is not None and evaluate() == {"NAME": str}
        assert not {"__annotate__", "__conditional_annotations__"} & set(bound)
        assert _cpython.unread_annotations(own) == {"LIMIT": int}
    else:  # stored into the module's own
        assert evaluate is None and module["__annotations__"] == {"LIMIT": int, "NAME": str}
        assert _cpython.unread_annotations(own) == {}
