"""Ray's and vLLM's log stamps are local time: the lab reads them in the zone that wrote them, on a
host set to any zone, and stops with a mark's name when an expected line is missing."""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lab import cold_start

ROOT = Path(__file__).resolve().parent.parent
ZONE = "America/New_York"  # five hours behind UTC in December, four in summer

LIVE = """
import json, sys, tempfile, time
from pathlib import Path
from lab import autoscaling
logs = Path(tempfile.mkdtemp())
now = time.time()
ms = int(now % 1 * 1000)
(logs / "worker.out").write_text(
    time.strftime("INFO %Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{ms:03d} serve 1 -- Ray's line\\n"
    + time.strftime("(EngineCore pid=2) INFO %m-%d %H:%M:%S [core.py:1] vLLM's line", time.localtime(now)) + "\\n")
print(json.dumps([t.timestamp() - now for t, _ in autoscaling.timed_lines(logs)]))
"""


@pytest.mark.parametrize("zone", ["UTC", ZONE])
def test_a_live_runs_log_stamps_agree_with_the_clock_in_any_zone(zone):
    out = subprocess.run([sys.executable, "-c", LIVE], cwd=ROOT, env={**os.environ, "TZ": zone},
                         capture_output=True, text=True, timeout=120, check=True)
    ray_s, vllm_s = json.loads(out.stdout)
    assert abs(ray_s) < 0.01 and -1 < vllm_s <= 0, (ray_s, vllm_s)  # vLLM's stamp has whole seconds


def test_an_executed_notebook_is_read_in_the_zone_it_ran_in():
    read = "import json, nbformat; from lab import cold_start; " \
           "print(json.dumps(cold_start.phases(nbformat.read('docs/results/cpu-notebook.ipynb', 4))))"
    runs = [json.loads(subprocess.run([sys.executable, "-c", read], cwd=ROOT, env={**os.environ, "TZ": zone},
                                      capture_output=True, text=True, timeout=120, check=True).stdout)
            for zone in ("UTC", ZONE)]
    assert runs[0] == runs[1] and sum(runs[0]["phases_s"].values()) > 0


def test_vllms_stamp_without_a_year_takes_the_year_nearest_the_run():
    new_year = datetime.datetime(2027, 1, 1, 0, 0, 5, tzinfo=datetime.timezone.utc)
    t = cold_start.line_time("INFO 12-31 23:59:58 [core.py:1] x", new_year, datetime.timezone.utc)
    assert t == datetime.datetime(2026, 12, 31, 23, 59, 58, tzinfo=datetime.timezone.utc)


def test_a_missing_mark_stops_the_reading_with_its_name():
    nb = nbformat.read(ROOT / "docs/results/cpu-notebook.ipynb", as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "stdout":
                output["text"] = output["text"].replace("Initializing a V1 LLM engine", "Initialising an engine")
    with pytest.raises(cold_start.MissingMark, match="replica starts, imports vLLM, engine process"):
        cold_start.phases(nb)
    del nb.metadata["lab"]
    with pytest.raises(cold_start.MissingMark, match="time zone"):
        cold_start.phases(nb)
