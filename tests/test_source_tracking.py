"""Source tracking: a module's file edited in place (the usual flow) is updated from the file
alone, because the source it was imported from was recorded; without tracking, a file that
cannot tell what the module runs is never taken as the running version: the new version is
compared with the live module instead, and what that cannot tell is said."""

import importlib
import importlib.util
import os
import py_compile
import sys
import threading
import textwrap
import types

import pytest

import pymoult
from pymoult import source_tracking
from pymoult.errors import ModuleUpdateError
from pymoult.highlevel.managers import Manager
from pymoult.highlevel.updates import ModuleUpdate
from pymoult.lowlevel.relinking import redefineFunction

JOBS = """
class Job:
    def __init__(self, n):
        self.n = n
    def run(self):
        return f"v1 job {self.n}"

def process(n):
    return Job(n).run()
"""


@pytest.fixture
def tracked(tmp_path, monkeypatch):
    """``load(name, source)`` writes and imports a module, with sources tracked or not."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def load(name, source, track=True):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        if track:
            pymoult.track_sources()
        else:
            source_tracking.stop_tracking()
        try:
            module = importlib.import_module(name)
        finally:
            source_tracking.stop_tracking()
        names.append(name)
        return module

    load.path = tmp_path
    yield load
    for name in names:
        sys.modules.pop(name, None)


def edit(tmp_path, name, old, new):
    path = tmp_path / f"{name}.py"
    path.write_text(path.read_text().replace(old, new))


def test_a_file_edited_in_place_updates_from_the_file_alone(tracked):
    jobs = tracked("trk_jobs_a", JOBS)
    job, process = jobs.Job(1), jobs.process
    edit(tracked.path, "trk_jobs_a", "v1 job", "v2 job")
    update = ModuleUpdate(jobs)  # no source, no old source: the file as it is now
    assert Manager().apply_update(update) is update
    assert job.run() == "v2 job 1" and process(2) == "v2 job 2"
    assert source_tracking.tracked_source(jobs).count("v1 job") == 1  # as imported


def test_an_edit_after_a_script_changed_a_function_is_applied(tracked):
    jobs = tracked("trk_jobs_b", JOBS)
    script = types.ModuleType("pymoult_update_1")
    exec("def process(n):\n    return 'from the script'\n", script.__dict__)
    redefineFunction(jobs, "process", script.process)
    assert jobs.process(1) == "from the script"
    edit(tracked.path, "trk_jobs_b", "return Job(n).run()", "return 'edited ' + Job(n).run()")
    Manager().apply_update(ModuleUpdate(jobs))
    assert jobs.process(3) == "edited v1 job 3"


def test_without_tracking_an_edit_after_a_script_changed_a_function_is_applied(tracked):
    jobs = tracked("trk_jobs_c", JOBS, track=False)
    assert source_tracking.tracked_source(jobs) is None
    script = types.ModuleType("pymoult_update_2")
    exec("def process(n):\n    return 'from the script'\n", script.__dict__)
    redefineFunction(jobs, "process", script.process)
    edit(tracked.path, "trk_jobs_c", "return Job(n).run()", "return 'edited'")
    update = ModuleUpdate(jobs)  # compared with the live objects: the script's code differs
    assert [str(step) for step in update.steps] == [
        "update function trk_jobs_c.process (line 8): in place"]
    Manager().apply_update(update)
    assert jobs.process(1) == "edited"


def test_without_tracking_a_script_change_the_file_undoes_is_not_lost(tracked):
    """The silent drop: the file is as imported, but a script changed what runs; pushing the
    file must bring the file's code back, not report that nothing changes."""
    jobs = tracked("trk_jobs_f", JOBS, track=False)
    script = types.ModuleType("pymoult_update_3")
    exec("def process(n):\n    return 'from the script'\n", script.__dict__)
    redefineFunction(jobs, "process", script.process)
    update = ModuleUpdate(jobs)
    assert [str(step) for step in update.steps] == [
        "update function trk_jobs_f.process (line 8): in place"]
    Manager().apply_update(update)
    assert jobs.process(1) == "v1 job 1"


def test_tracked_a_script_change_the_file_undoes_is_not_lost(tracked):
    jobs = tracked("trk_jobs_g", JOBS)
    script = types.ModuleType("pymoult_update_4")
    exec("def process(n):\n    return 'from the script'\n", script.__dict__)
    redefineFunction(jobs, "process", script.process)
    update = ModuleUpdate(jobs)  # the file as imported: only the script's change differs
    assert [str(step) for step in update.steps] == [
        "update function trk_jobs_g.process (line 8): in place"]
    Manager().apply_update(update)
    assert jobs.process(1) == "v1 job 1"


def test_without_tracking_a_file_edited_after_the_import_is_compared_with_the_live_module(
        tracked):
    jobs = tracked("trk_jobs_d", JOBS + "LIMIT = 3\nLOG = str(3)\n", track=False)
    job = jobs.Job(4)
    edit(tracked.path, "trk_jobs_d", "return Job(n).run()", "return 'edited'")
    edit(tracked.path, "trk_jobs_d", '"v1 job', '"v2 job')
    edit(tracked.path, "trk_jobs_d", "LIMIT = 3", "LIMIT = 4")
    edit(tracked.path, "trk_jobs_d", "LOG = str(3)", "LOG = str(4)")
    update = ModuleUpdate(jobs)
    listing = [str(step) for step in update.steps]
    assert "update function trk_jobs_d.process (line 8): in place" in listing
    assert "update class trk_jobs_d.Job (line 2)" in listing
    assert "set trk_jobs_d.LIMIT (line 10): was 3, now 4" in listing
    undecided = "undecided trk_jobs_d.LOG (line 11): its value is computed at import"
    assert any(line.startswith(undecided) for line in listing)  # what the live objects cannot tell
    assert any(line.startswith("undecided trk_jobs_d.<module>: the source it runs is not known")
               for line in listing)
    Manager().apply_update(update)
    assert jobs.process(1) == "edited" and job.run() == "v2 job 4" and jobs.LIMIT == 4
    assert jobs.LOG == "3"  # kept, as the note said


def test_the_filter_and_the_statistics():
    calls = []

    def include(name, path):
        calls.append(name)
        return False

    before = source_tracking.statistics()
    pymoult.track_sources(include)
    try:
        sys.modules.pop("colorsys", None)
        import colorsys
    finally:
        source_tracking.stop_tracking()
    assert "colorsys" in calls
    assert source_tracking.tracked_source(colorsys) is None
    assert source_tracking.statistics() == before
    assert not source_tracking.is_tracking()
    with pytest.raises(TypeError, match="include must be a callable"):
        pymoult.track_sources(include=42)


def test_a_module_without_a_file_needs_a_source():
    module = types.ModuleType("trk_nofile")
    with pytest.raises(ModuleUpdateError, match="has no Python source file to read its new "
                                                 "version from: give source= or path="):
        ModuleUpdate(module)


def test_a_record_reads_the_same_before_and_after_it_is_compressed(tracked):
    jobs = tracked("trk_jobs_e", JOBS)
    first = source_tracking.tracked_source(jobs)
    path = os.path.abspath(str(tracked.path / "trk_jobs_e.py"))
    done = threading.Event()
    for _ in range(500):  # the compressor thread runs on its own: give it up to 5 s
        if source_tracking._records[path].state == source_tracking.COMPRESSED:
            done.set()
            break
        done.wait(0.01)
    assert done.is_set(), "the record was never compressed"
    assert source_tracking.tracked_source(jobs) == first == textwrap.dedent(JOBS)


@pytest.fixture
def from_pyc(tmp_path, monkeypatch):
    """``load(name, source)`` writes a module and its ``.pyc``, then imports it with sources
    tracked: the import runs the ``.pyc`` and does not read the ``.py``. The background thread
    is held off (``QUIET``) so that the record stays unread until the test reads it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(source_tracking, "QUIET", 3600.0)
    monkeypatch.setattr(source_tracking, "MAX_DELAY", 3600.0)
    names = []

    def load(name, source):
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        py_compile.compile(str(path), cfile=importlib.util.cache_from_source(str(path)),
                           invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
                           doraise=True)
        importlib.invalidate_caches()
        pymoult.track_sources()
        try:
            module = importlib.import_module(name)
        finally:
            source_tracking.stop_tracking()
        names.append(name)
        return module, os.path.abspath(str(path))

    yield load
    for name in names:
        sys.modules.pop(name, None)
    monkeypatch.undo()
    source_tracking.flush()  # and the background thread back to the usual delays


def test_a_module_run_from_its_pyc_is_read_after_the_import(from_pyc):
    jobs, path = from_pyc("trk_pyc_a", JOBS)
    assert source_tracking._records[path].state == source_tracking.UNREAD
    assert source_tracking.statistics()["unread"] >= 1
    assert source_tracking.tracked_source(jobs) == textwrap.dedent(JOBS)  # read now
    assert source_tracking._records[path].state == source_tracking.RAW


def test_a_module_run_from_its_pyc_and_edited_before_it_was_read_is_untracked(tmp_path,
                                                                             from_pyc):
    jobs, path = from_pyc("trk_pyc_b", JOBS)
    job = jobs.Job(5)
    edit(tmp_path, "trk_pyc_b", "v1 job", "v2 edited job")  # the size changes: seen for sure
    assert source_tracking.tracked_source(jobs) is None  # not taken for what runs
    assert path not in source_tracking._records
    update = ModuleUpdate(jobs)  # compared with the live module instead
    assert "update class trk_pyc_b.Job (line 2)" in [str(step) for step in update.steps]
    Manager().apply_update(update)
    assert job.run() == "v2 edited job 5"


def test_flush_reads_and_compresses_what_the_imports_left(from_pyc):
    jobs, path = from_pyc("trk_pyc_c", JOBS)
    assert source_tracking._records[path].state == source_tracking.UNREAD
    source_tracking.flush()
    assert source_tracking._records[path].state == source_tracking.COMPRESSED
    assert source_tracking.statistics()["unread"] == 0
    assert source_tracking.tracked_source(jobs) == textwrap.dedent(JOBS)


def test_the_background_thread_reads_what_the_imports_left(from_pyc, monkeypatch):
    monkeypatch.setattr(source_tracking, "QUIET", 0.01)
    monkeypatch.setattr(source_tracking, "MAX_DELAY", 0.01)
    jobs, path = from_pyc("trk_pyc_d", JOBS)
    done = threading.Event()
    for _ in range(500):  # the thread runs on its own: give it up to 5 s
        if source_tracking._records[path].state == source_tracking.COMPRESSED:
            done.set()
            break
        done.wait(0.01)
    assert done.is_set(), "the record was never read and compressed"
    assert source_tracking.tracked_source(jobs) == textwrap.dedent(JOBS)
