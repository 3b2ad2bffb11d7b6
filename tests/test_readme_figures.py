"""benchmarks/readme_figures.py: the benchmark tables of docs/benchmarks.md written from recorded
runs."""

import copy
import importlib.util
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load(name):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = load("readme_figures")

SPREAD = {"median": 1.5, "p99": 3.25, "max": 4.0}


def dask_peer(wall_s, skew_ms, failed, data_kept, objects_new, **more):
    return {"wall_s": wall_s, "skew_ms": skew_ms, "failed": failed, "tasks": 120, "stale": 0,
            "data_kept": data_kept, "objects_new": objects_new, "objects": 8,
            "failed_runs": 0, "runs": [], **more}


def dask_results():
    """bench_dask.py's results, as run_all.py records them."""
    return {"repeats": 3, "seconds": 184.2, "distributed": "2024.8.0", "load_average": [1, 1],
            "make_cost": 0.05, "work_cost": 0.002, "by_workers": {
                "2": {"workers": 2, "cluster_start_s": 1.5, "seconds": 40.0,
                      "pymoult": dask_peer(0.21, 3.25, 0, True, 8, apply_ms=12.5, undo_s=0.15,
                                           targets=3),
                      "upload_file": dask_peer(0.05, 9.0, 0, True, 0),
                      "restart": dask_peer(4.6, None, 14, False, 8)},
                "8": {"workers": 8, "cluster_start_s": 5.5, "seconds": 90.0,
                      "pymoult": {"failed_runs": 3, "runs": []},
                      "upload_file": dask_peer(0.12, 30.5, 2, True, 0),
                      "restart": dask_peer(11.25, None, 40, False, 32)}}}


def fleet_mode(skew, wall, reported=None):
    return {"skew_ms": {"median": skew, "max": skew * 2}, "wall_ms": {"median": wall,
                                                                      "max": wall * 2},
            "reported_skew_ms": reported, "runs": []}


def fleet_results():
    """bench_fleet.py's results, as run_all.py records them."""
    return {"repeats": 15, "seconds": 95.5, "load_average": [1, 1],
            "modes": ["two-phase", "one wave", "canary, waves of 1"], "by_processes": {
                "2": {"processes": 2, "two-phase": fleet_mode(0.42, 30.5, 0.4),
                      "one wave": fleet_mode(3.5, 20.0),
                      "canary, waves of 1": fleet_mode(25.0, 40.0)},
                "8": {"processes": 8, "two-phase": fleet_mode(2.5, 80.0, 2.25),
                      "one wave": fleet_mode(15.0, 60.0)}}}


def results():
    """The results of one run_all.py run, every benchmark with the fields the tables read."""
    return {
        "dask": dask_results(),
        "fleet": fleet_results(),
        "core": {
            "idle_point": {"ratio_point_vs_empty_call": 1.21,
                           "ratio_zero_arg_point_vs_empty_call": 1.1,
                           "ratio_point_vs_no_point": 2.8, "ratio_original_pymoult_vs_point": 4.7,
                           "net_ns": {"staticUpdatePoint()": 48.3, "empty function call": 39.9}},
            "park_and_wake": {"park_us": {"median": 70, "p99": 263},
                              "wake_us": {"median": 13, "p99": 91}},
            "stop_the_world": {"0 busy threads": {"entry_ms_median": 0.05, "entry_ms_p99": 0.8,
                                                  "interleaved_exclusive_windows": 0}},
        },
        "data": {"sizes": {"1000": {"atomic": 5e5, "atomic=False": 3e6}},
                 "lazy": {"1000": {"start_ns_per_object": 500, "first_touch_ns": 9000}},
                 "read_ns": {"never converted": 20.0, "converted lazily": 60.0}},
        "updates": {"apply_latency_ms": SPREAD, "pause_ms": SPREAD, "updates": 10,
                    "torn": {"pymoult": {"calls": 4_000_000, "torn": 0}}},
        "quiescence": {"by_threads": {"50": {"frames_alive": 1454, "snapshot_us": 287,
                                             "parked_us": 485}}},
        "suspension": {"kinds": [{"kind": "point", "suspend_ms": SPREAD}]},
        "source_tracking": {"ratio_median": 1.01, "modules": 253, "source_mb": 4.8,
                            "background_cpu_ms": 90.0,
                            "stored_mb_compressed": 1.5},
        "module_update": {
            "target_ms": 100,
            "apply": {"by_size": {"10": {
                "gc_objects": 1000, "source_memory": {"parsed_mb": 0.1, "recorded_mb": 0.01},
                "Pymoult": {"median_ms": 1.5, "ratio_to_pymoult": 1.0, "capped": False},
                "jurigged": {"median_ms": 3034.0, "ratio_to_pymoult": 2022.7, "capped": True}}}},
            "torn": {"decode(encode(x))": {"Pymoult": {"calls": 2_600_000, "torn": 0},
                                           "jurigged": {"calls": 5_000_000, "torn": 450_000}}},
        },
        "under_load": {
            "settings": {"clients": 8, "rate_per_client": 50, "duration_s": 20, "updates": 100},
            "requests": {"served": 8007, "failed": 0, "connection_errors": 0,
                         "load_generator_stalls": {"count": 0, "longest_ms": 0}},
            "server": {"requests": 8009, "connections": 10, "expected_requests": 8009,
                       "expected_connections": 10},
            "updates": {"planned": 100, "applied": 99, "rolled_back": 1, "unexpected": 0,
                        "by_kind": {"code": 99, "rollback": 1},
                        "apply": {"all": {"push_round_trip_ms": SPREAD,
                                          "queued_to_applied_ms": SPREAD,
                                          "requests_held_ms": SPREAD},
                                  "by_kind": {"code": {"pause_ms": SPREAD}}}},
            "latency": {"outside_updates": {"median_ms": 0.6, "p99_ms": 1.8, "max_ms": 24.1},
                        "sent_during_updates": {"median_ms": 2.0, "p99_ms": 11.9, "max_ms": 15.7},
                        "in_flight_during_updates": {"requests": 0}},
        },
    }


def run_document(python="3.11.7", **changes):
    document = {"python": python, "started_utc": "2025-03-01T09:30:00+00:00", "seconds": 612.4,
                "platform": "Linux-x86_64", "cpus": 2, "quick": False,
                "load_average_before": [0.91, 0.8, 0.7], "load_average_after": [0.86, 0.8, 0.7],
                "peers": {"jurigged": "0.6.1", "ipython": None}, "commit": "84b4be4fd22e",
                "benchmarks": {name: {"status": "ok", "seconds": 10.0, "results": value}
                               for name, value in results().items()}}
    document.update(changes)
    return document


def write_run(tmp_path, document, name=None):
    path = tmp_path / (name or f"all-{document['python']}.json")
    path.write_text(json.dumps(document))
    return str(path)


README = """# A project

Text before, quoting nothing.

<!-- figures:summary -->
an old table
<!-- /figures:summary -->

Text between.

<!-- figures:under-load -->
<!-- /figures:under-load -->

<!-- figures:dask -->
<!-- /figures:dask -->

<!-- figures:fleet -->
<!-- /figures:fleet -->

Text after.
"""


def outside(text, name):
    start = text.index(f"<!-- figures:{name} -->")
    end = text.index(f"<!-- /figures:{name} -->")
    return text[:start], text[end:]


def test_tables_are_written_between_the_markers_and_nothing_else_changes(tmp_path):
    runs = figures.load_runs([write_run(tmp_path, run_document("3.12.1")),
                              write_run(tmp_path, run_document("3.10.14"))])
    text = figures.rewrite(README, runs)

    assert text.startswith("# A project\n\nText before, quoting nothing.\n\n"
                           "<!-- figures:summary -->\n")
    assert text.endswith("<!-- /figures:fleet -->\n\nText after.\n")
    assert "an old table" not in text
    between = text[text.index("<!-- /figures:summary -->"):
                   text.index("<!-- figures:under-load -->")]
    assert between == "<!-- /figures:summary -->\n\nText between.\n\n"
    assert "| figure | 3.10 | 3.12 |" in text  # a column per version, in version order
    assert "| under load | 3.10 | 3.12 |" in text
    assert "- 3.10: CPython 3.10.14, 2025-03-01 09:30 UTC, Linux-x86_64, 2 CPUs, load average " \
           "0.91 before / 0.86 after, ipython not installed, jurigged 0.6.1, commit 84b4be4fd22e" \
           in text
    assert ("| run time: all benchmarks / module update benchmark (s) | 612 / 10 | 612 / 10 |"
            in text)
    assert "| module update, 10 definitions (ms): Pymoult / jurigged | 1.5 / 3,034* |" in text
    # every row has a cell per version
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows and all(line.count(" | ") == 2 for line in rows)


def test_the_same_runs_give_the_same_text_whatever_their_order(tmp_path):
    paths = [write_run(tmp_path, run_document("3.13.0")),
             write_run(tmp_path, run_document("3.11.7"))]
    once = figures.rewrite(README, figures.load_runs(paths))
    assert figures.rewrite(README, figures.load_runs(list(reversed(paths)))) == once
    assert figures.rewrite(once, figures.load_runs(paths)) == once  # rewriting is idempotent


def test_a_figure_missing_from_one_run_is_not_measured_there(tmp_path):
    partial = run_document("3.10.14")
    del partial["benchmarks"]["updates"]["results"]["torn"]["pymoult"]
    partial["benchmarks"]["updates"]["results"]["torn"]["jurigged"] = {"calls": 10, "torn": 1}
    runs = figures.load_runs([write_run(tmp_path, partial), write_run(tmp_path, run_document())])
    text = figures.rewrite(README, runs)
    torn = "| torn calls, two functions changed together:"
    assert f"{torn} jurigged | 1 of 10 (10.0%) | n/a |" in text
    assert f"{torn} pymoult | n/a | 0 of 4.0M (0.0%) |" in text


def test_the_command_rewrites_the_readme_it_is_given(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert figures.main([write_run(tmp_path, run_document()), "--readme", str(readme)]) == 0
    assert "| figure | 3.11 |" in readme.read_text()
    assert figures.main([write_run(tmp_path, run_document()), "--readme", str(readme)]) == 0
    assert "already up to date" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    (README.replace("<!-- /figures:under-load -->\n", ""),
     "the file has 0 <!-- /figures:under-load --> markers, where there must be one"),
    (README.replace("<!-- figures:summary -->\n", ""),
     "the file has 0 <!-- figures:summary --> markers, where there must be one"),
    (README + "<!-- figures:summary -->\n",
     "the file has 2 <!-- figures:summary --> markers, where there must be one"),
])
def test_a_missing_or_repeated_marker_is_an_error_and_the_readme_is_kept(tmp_path, capsys, text,
                                                                          message):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert figures.main([write_run(tmp_path, run_document()), "--readme", str(readme)]) == 1
    assert readme.read_text() == text
    assert capsys.readouterr().err == f"readme_figures: {message}; {readme} left as it was\n"


def test_markers_in_the_wrong_order_are_an_error():
    text = README.replace("<!-- figures:summary -->", "@").replace(
        "<!-- /figures:summary -->", "<!-- figures:summary -->").replace(
        "@", "<!-- /figures:summary -->")
    with pytest.raises(figures.FigureError, match="comes before"):
        figures.replace_between(text, "summary", "table")


def without(document, *path):
    document = copy.deepcopy(document)
    node = document
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return document


@pytest.mark.parametrize("document, message", [
    (without(run_document(), "benchmarks", "core", "results", "idle_point", "net_ns"),
     "all-3.11.7.json lacks the figure core > idle_point > net_ns"),
    (without(run_document(), "benchmarks", "under_load", "results", "requests", "served"),
     "all-3.11.7.json lacks the figure under_load > requests > served"),
    (without(run_document(), "benchmarks", "data"),
     "all-3.11.7.json has no 'data' benchmark (was it run with --only?)"),
    (without(run_document(), "load_average_before"),
     "all-3.11.7.json lacks 'load_average_before': is it a JSON written by run_all.py?"),
    (run_document(benchmarks={**run_document()["benchmarks"],
                              "module_update": {"status": "failed", "why": "exit code 1"}}),
     "all-3.11.7.json: the 'module_update' benchmark did not give figures (failed: exit code 1)"),
])
def test_a_run_lacking_a_figure_is_an_error_naming_it(tmp_path, document, message):
    runs = figures.load_runs([write_run(tmp_path, document)])
    with pytest.raises(figures.FigureError) as raised:
        figures.rewrite(README, runs)
    assert str(raised.value) == message


def test_two_runs_of_one_version_are_an_error(tmp_path):
    paths = [write_run(tmp_path, run_document("3.11.7"), "a.json"),
             write_run(tmp_path, run_document("3.11.9"), "b.json")]
    with pytest.raises(figures.FigureError, match="a.json and b.json are both runs of Python 3.11"):
        figures.load_runs(paths)


def test_a_file_that_is_not_json_is_an_error(tmp_path):
    path = tmp_path / "all.json"
    path.write_text("{")
    with pytest.raises(figures.FigureError, match="is not JSON"):
        figures.load_runs([str(path)])


def test_the_command_rewrites_the_benchmarks_page_unless_given_another_file(tmp_path,
                                                                            monkeypatch):
    assert figures.TARGET == ROOT / "docs" / "benchmarks.md"
    page = tmp_path / "benchmarks.md"
    page.write_text(README)
    monkeypatch.setattr(figures, "TARGET", page)
    assert figures.main([write_run(tmp_path, run_document())]) == 0
    assert "| figure | 3.11 |" in page.read_text()
    other = tmp_path / "other.md"
    other.write_text(README)
    assert figures.main([write_run(tmp_path, run_document("3.12.1")), "--target",
                         str(other)]) == 0
    assert "| figure | 3.12 |" in other.read_text()
    assert "| figure | 3.11 |" in page.read_text()  # the default target was left alone


@pytest.mark.parametrize("name", sorted(figures.TABLES))
def test_the_benchmarks_page_holds_each_marker_pair_once_in_order(name):
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    opening, closing = f"<!-- figures:{name} -->", f"<!-- /figures:{name} -->"
    assert text.count(opening) == 1 and text.count(closing) == 1
    assert text.index(opening) < text.index(closing)


def test_run_all_names_its_json_by_python_version(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # where run_all.py finds _common.py
    run_all = load("run_all")
    assert run_all.default_json().name == f"all-{sys.version_info[0]}.{sys.version_info[1]}.json"


def test_conversion_rows_give_the_gc_share_and_the_per_round_read_ratio(tmp_path):
    document = run_document()
    document["benchmarks"]["data"]["results"].update(
        sizes={"1000": {"atomic": 3e6}}, gc_share={"1000": {"atomic": 0.04}},
        read_ns={"never converted (peer)": 20.0, "converted lazily": 30.0},
        read_ratio={"never converted (peer)": 1.0, "converted lazily": 1.25})
    text = figures.rewrite(README, figures.load_runs([write_run(tmp_path, document)]))
    assert "| conversion, atomic, 1,000 objects (M objects/s, share of the time in garbage " \
           "collection) | 3.00 (4% GC) |" in text
    # the ratio measured round by round, not the ratio of the two medians (1.50x)
    assert "| attribute read, converted lazily / never converted (peer) (ns) | 1.25x (30.0) |" \
        in text


def test_the_dask_table_gives_each_way_of_changing_the_cluster_side_by_side(tmp_path):
    runs = figures.load_runs([write_run(tmp_path, run_document("3.12.1")),
                              write_run(tmp_path, run_document("3.11.7"))])
    text = figures.rewrite(README, runs)
    block = text[text.index("<!-- figures:dask -->"):text.index("<!-- /figures:dask -->")]
    lines = block.splitlines()[1:]
    assert lines[:3] == [
        "| Dask cluster | 3.11 | 3.12 |", "| --- | --- | --- |",
        "| distributed version, repeats, run time | distributed 2024.8.0, medians of 3 repeats, "
        "184 s | distributed 2024.8.0, medians of 3 repeats, 184 s |"]
    peers = "pymoult / upload_file / restart"
    for row in [
            f"| 2 workers: wall time of the change, {peers} (s) | 0.21 / 0.05 / 4.60 |",
            f"| 2 workers: switch skew, first to last process, {peers} (ms) | 3.2 / 9.0 / - |",
            f"| 2 workers: tasks of the stream failed, of those run: {peers} | "
            "0 of 120 / 0 of 120 / 14 of 120 |",
            f"| 2 workers: tasks submitted after the change that ran the old code: {peers} | "
            "0 / 0 / 0 |",
            f"| 2 workers: data kept in memory (not recomputed): {peers} | kept / kept / lost |",
            f"| 2 workers: objects in memory running the new code: {peers} | "
            "8 of 8 / 0 of 8 / 8 of 8 |",
            "| 2 workers: Pymoult's apply on a worker, median / its undo on the cluster (ms) | "
            "12.5 / 150 |",
            # a peer whose every run failed says so; a figure it lacks is not measured
            f"| 8 workers: wall time of the change, {peers} (s) | failed / 0.12 / 11.25 |",
            "| 8 workers: Pymoult's apply on a worker, median / its undo on the cluster (ms) | "
            "n/a |"]:
        assert any(line.startswith(row) for line in lines), row
    assert lines[-1] == "(From the runs of 3.11, 3.12 listed above.)"
    assert all(line.count(" | ") == 2 for line in lines if line.startswith("| "))


def test_a_run_without_the_dask_benchmark_has_no_dask_column(tmp_path):
    skipped = run_document("3.10.14")
    skipped["benchmarks"]["dask"] = {"status": "skipped", "why": "needs distributed"}
    absent = without(run_document("3.13.0"), "benchmarks", "dask")
    text = figures.rewrite(README, figures.load_runs([write_run(tmp_path, skipped),
                                                      write_run(tmp_path, absent),
                                                      write_run(tmp_path, run_document())]))
    assert "| Dask cluster | 3.11 |\n" in text
    assert "(From the runs of 3.11 listed above.)" in text
    assert "| figure | 3.10 | 3.11 | 3.13 |" in text
    none = figures.rewrite(README, figures.load_runs([write_run(tmp_path, skipped)]))
    assert "No recorded run includes the Dask benchmark" in none
    failed = run_document("3.12.1")
    failed["benchmarks"]["dask"] = {"status": "failed", "why": "exit code 1"}
    with pytest.raises(figures.FigureError, match=r"^all-3.12.1.json: the 'dask' benchmark did "
                                                  r"not give figures \(failed: exit code 1\)$"):
        figures.rewrite(README, figures.load_runs([write_run(tmp_path, failed)]))


def test_the_fleet_table_gives_the_skew_of_each_way_of_rolling_out(tmp_path):
    runs = figures.load_runs([write_run(tmp_path, run_document("3.12.1")),
                              write_run(tmp_path, run_document("3.11.7"))])
    text = figures.rewrite(README, runs)
    block = text[text.index("<!-- figures:fleet -->"):text.index("<!-- /figures:fleet -->")]
    lines = block.splitlines()[1:]
    modes = "two-phase / one wave / canary, waves of 1"
    assert lines[:3] == ["| fleet of `pymoult run` processes | 3.11 | 3.12 |",
                         "| --- | --- | --- |",
                         "| repeats, run time | 15 rollouts per way, interleaved, 95.5 s | "
                         "15 rollouts per way, interleaved, 95.5 s |"]
    for row in [
            f"| 2 processes: switch skew, first to last process, {modes}, median (max) (ms) | "
            "0.42 (0.84) / 3.5 (7.0) / 25.0 (50.0) |",
            f"| 2 processes: rollout wall time, {modes}, median (max) (ms) | "
            "30.5 (61.0) / 20.0 (40.0) / 40.0 (80.0) |",
            "| 2 processes: two-phase skew as the rollout reports it, median (ms) | 0.40 |",
            # a way a run did not measure
            f"| 8 processes: switch skew, first to last process, {modes}, median (max) (ms) | "
            "2.5 (5.0) / 15.0 (30.0) / n/a |"]:
        assert any(line.startswith(row) for line in lines), row
    assert lines[-1] == "(From the runs of 3.11, 3.12 listed above.)"
