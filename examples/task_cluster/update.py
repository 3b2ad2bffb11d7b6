"""Give every worker of the running cluster the next release of ``jobs`` (``jobs_v2.py``),
live: the readings stay in the workers' memory; the next tasks run the new ``score``."""

import pathlib
import sys

from pymoult.delivery.dask_cluster import update_cluster

app = sys.modules["__main__"]
if not app.ready.wait(30):
    raise RuntimeError("the application has not started its cluster within 30 s")
new_release = pathlib.Path(app.__file__).resolve().parent / "jobs_v2.py"

report = update_cluster(app.client, "jobs", path=new_release)
if not report.ok:  # the reply of `pymoult push` shows the report, one line per process
    raise RuntimeError(str(report))
app.say(f"update_cluster: {report.summary}")  # and within how long they switched (one write)
