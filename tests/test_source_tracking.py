"""Source tracking: a module's file edited in place (the usual flow) is updated from the file
alone, because the source it was imported from was recorded; without tracking, a file that
cannot tell what the module runs is refused, never taken as the running version."""

import importlib
import os
import sys
import threading
import textwrap
import types

import pytest

import pymoult
from pymoult import source_tracking
from pymoult.errors import ModuleUpdateError, PymoultValueError
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


def test_without_tracking_a_function_changed_by_a_script_makes_the_file_refused(tracked):
    jobs = tracked("trk_jobs_c", JOBS, track=False)
    assert source_tracking.tracked_source(jobs) is None
    script = types.ModuleType("pymoult_update_2")
    exec("def process(n):\n    return 'from the script'\n", script.__dict__)
    redefineFunction(jobs, "process", script.process)
    edit(tracked.path, "trk_jobs_c", "return Job(n).run()", "return 'edited'")
    with pytest.raises((ModuleUpdateError, PymoultValueError),
                       match=r"function 'process' of module 'trk_jobs_c' runs code from "
                             r"<string>, not from its file .*track sources"):
        ModuleUpdate(jobs)
    assert jobs.process(1) == "from the script"  # nothing changed


def test_without_tracking_a_file_edited_after_the_import_is_refused(tracked):
    jobs = tracked("trk_jobs_d", JOBS, track=False)
    edit(tracked.path, "trk_jobs_d", "return Job(n).run()", "return 'edited'")
    with pytest.raises((ModuleUpdateError, PymoultValueError),
                       match="is not the version the module runs: function 'process' differs"):
        ModuleUpdate(jobs)


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
        if source_tracking._records[path][3]:
            done.set()
            break
        done.wait(0.01)
    assert done.is_set(), "the record was never compressed"
    assert source_tracking.tracked_source(jobs) == first == textwrap.dedent(JOBS)
