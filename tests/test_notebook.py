"""The notebook end to end under nbmake, once, on the small model on the CPU: run as the GPU runner runs it
(ci/gpu_notebook.sh, which calls `python -m lab run notebook`), so the same script, nbmake run and results
code are proven here. Its cells' own checks (the answer contains "4", the readiness check, Shut down leaves
nothing) fail the run; conftest.py tears the deployment down after it, pass or fail, in the nbmake run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lab import cold_start, notebook_results

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.deploys


def test_the_notebook_runs_end_to_end_under_nbmake_and_its_start_up_is_read_back(tmp_path):
    env = {**os.environ, "LLM_PROFILE": "cpu", "READY_TIMEOUT_S": "600", "RESULTS_DIR": str(tmp_path),
           "RESULTS_NAME": "smoke"}
    run = subprocess.run(["bash", "ci/gpu_notebook.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert set(notebook_results.FIELDS) <= set(result) and result["passed"] and result["shutdown_verified"]
    assert result["notebook_sha256"] == notebook_results.notebook_sha256(nbformat.read(ROOT / "notebook.ipynb", 4))
    assert "4" in result["answer"] and result["time_to_ready_s"] > 0
    assert (tmp_path / "smoke.serve-run.log").exists() and not (ROOT / "notebook.lab-run.ipynb").exists()
    out = tmp_path / "cold-start.json"
    read = subprocess.run([sys.executable, "-m", "lab", "run", "cold-start", "--out", str(out), f"smoke={tmp_path / 'smoke.ipynb'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    phases = json.loads(out.read_text())["runs"]["smoke"]
    # Every start-up mark was found in the run's log, in order (the reader stops on a missing one).
    assert list(phases["phases_s"]) == [name for name, _ in cold_start.MARKS] + ["readiness check answers"], phases
    assert out.with_suffix(".png").exists()
