"""Source tracking benchmark: what recording every module's source at import costs.

    python benchmarks/bench_source_tracking.py [--quick] [--json PATH]

Side by side in one run, alternating, each in a fresh interpreter: importing two large real
packages (hypothesis and IPython, from the test and bench extras) with ``track_sources()`` on
and off. Reports the median import time of each, their ratio (median of the pairwise ratios),
and the memory the records take before and after the background compression.
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
raw = tracking.statistics()
if sys.argv[1] == "on":
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and \
            tracking.statistics()["stored_bytes"] == raw["source_bytes"]:
        time.sleep(0.05)
    time.sleep(tracking.QUIET + 0.5)
print(json.dumps({"seconds": elapsed, "raw": raw, "compressed": tracking.statistics()}))
""" % (PACKAGES,)


def run(mode):
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def main():
    args = parse_args("Pymoult source tracking benchmark", "source_tracking.json",
                      "5 pairs instead of 15")
    pairs = 5 if args.quick else 15
    run("off"), run("on")  # warm the .pyc caches
    on, off = [], []
    for _ in range(pairs):
        off.append(run("off"))
        on.append(run("on"))
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(on, off)]
    result = {
        "packages": PACKAGES, "pairs": pairs,
        "import_ms_off": statistics.median(r["seconds"] for r in off) * 1e3,
        "import_ms_on": statistics.median(r["seconds"] for r in on) * 1e3,
        "ratio_median": statistics.median(ratios),
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
    print(f"  memory: {result['source_mb']:.2f} MB of source held in "
          f"{result['stored_mb_compressed']:.2f} MB once compressed: "
          f"{result['stored_mb_per_source_mb']:.2f} MB per MB of source "
          f"({result['stored_mb_per_source_mb_before_compression']:.2f} until compressed)")
    write_json(result, args.json)


if __name__ == "__main__":
    main()
