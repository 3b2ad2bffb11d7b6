"""Source tracking benchmark: what recording every module's source at import costs.

    python benchmarks/bench_source_tracking.py [--quick] [--json PATH]

Side by side in one run, alternating, each in a fresh interpreter: importing two large real
packages (hypothesis and IPython, from the test and bench extras) with ``track_sources()`` on
and off. Reports the median import time of each, their ratio (median of the pairwise ratios),
the CPU time the tracking's background thread spends afterwards (reading the files of modules
run from their ``.pyc`` and compressing the records: work moved off the import path, not
removed), and the memory the records take before and after it.
"""

import json
import pathlib
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import parse_args, write_json  # noqa: E402

PACKAGES = ("hypothesis", "IPython")
CHILD = """
import sys, time, json
import pymoult.source_tracking as tracking
if sys.argv[1] == "on":
    tracking.track_sources()
start = time.perf_counter()
for name in %r:
    __import__(name)
elapsed = time.perf_counter() - start
cpu_imported = time.process_time()
raw = tracking.statistics()
if sys.argv[1] == "on":  # the background thread reads and compresses the records by itself
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = tracking.statistics()
        if now["unread"] == 0 and now["stored_bytes"] < now["source_bytes"]:
            break
        time.sleep(0.02)
print(json.dumps({"seconds": elapsed, "raw": raw, "compressed": tracking.statistics(),
                  "background_cpu_s": time.process_time() - cpu_imported}))
""" % (PACKAGES,)


def run(mode):
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def main():
    args = parse_args("Pymoult source tracking benchmark", "source_tracking.json",
                      "5 pairs instead of 25")
    pairs = 5 if args.quick else 25
    run("off"), run("on")  # warm the .pyc caches
    on, off = [], []
    for i in range(pairs):  # each pair in the other order from the last: drift cancels out
        if i % 2:
            on.append(run("on"))
            off.append(run("off"))
        else:
            off.append(run("off"))
            on.append(run("on"))
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(on, off)]
    result = {
        "packages": PACKAGES, "pairs": pairs,
        "import_ms_off": statistics.median(r["seconds"] for r in off) * 1e3,
        "import_ms_on": statistics.median(r["seconds"] for r in on) * 1e3,
        "ratio_median": statistics.median(ratios),
        "background_cpu_ms": statistics.median(r["background_cpu_s"] for r in on) * 1e3,
        "modules": on[-1]["raw"]["modules"],
        "source_mb": on[-1]["raw"]["source_bytes"] / 1e6,
        "stored_mb_compressed": on[-1]["compressed"]["stored_bytes"] / 1e6,
    }
    result["stored_mb_per_source_mb"] = result["stored_mb_compressed"] / result["source_mb"]
    result["stored_mb_per_source_mb_before_compression"] = \
        on[-1]["raw"]["stored_bytes"] / on[-1]["raw"]["source_bytes"]
    print(f"Python {sys.version.split()[0]}: importing {', '.join(PACKAGES)} "
          f"({result['modules']} modules), {pairs} alternating pairs")
    print(f"  import, tracking off   {result['import_ms_off']:8.1f} ms (median)")
    print(f"  import, tracking on    {result['import_ms_on']:8.1f} ms (median)")
    print(f"  on / off               {result['ratio_median']:8.3f}x (median of pair ratios; "
          "target <= 1.05x)")
    print(f"  afterwards, in the background thread: {result['background_cpu_ms']:.1f} ms of CPU "
          "(median)")
    print(f"  memory: {result['source_mb']:.2f} MB of source held in "
          f"{result['stored_mb_compressed']:.2f} MB once compressed: "
          f"{result['stored_mb_per_source_mb']:.2f} MB per MB of source "
          f"({result['stored_mb_per_source_mb_before_compression']:.2f} right after the imports)")
    write_json(result, args.json)


if __name__ == "__main__":
    main()
