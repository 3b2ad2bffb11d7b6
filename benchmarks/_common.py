"""What every benchmark script shares: its command line, percentiles, and the JSON it writes."""

import argparse
import json
import pathlib
import sys

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def parse_args(description, json_name, quick_help):
    """``--quick`` and ``--json PATH`` (default ``benchmarks/results/<json_name>``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", default=str(RESULTS / json_name))
    return parser.parse_args()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def write_json(results, path):
    """Write ``results`` (with the Python version added) to ``path`` and say where."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"python": sys.version.split()[0], **results}, indent=2))
    print(f"\nJSON written to {out}")
