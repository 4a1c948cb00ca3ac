"""Scale to zero on the CPU, as the lab's experiment runs it (--smoke: a smaller burst): the small model in
the notebook's mode with min_replicas 0, real Ray and vLLM, the API key check on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.deploys


def test_no_replica_while_idle_and_every_request_after_idle_answered(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lab", "run", "scale-to-zero", "--smoke", "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    r = json.loads((tmp_path / "scale-to-zero-cpu.json").read_text())
    assert r["min_replicas"] == 0 and r["replicas_seen"] == [1, 0, 1, 0], r["replicas_seen"]
    assert not r["engines_at_zero"] and r["status_without_key"] == 401
    assert r["burst"]["answered"] == r["burst"]["clients"] and not r["burst"]["failed"] + r["burst"]["broken"]
    # Serve's decision to go from 0 to 1 replica, and the engine's own marks after it, were found in Ray's logs.
    start = r["burst_start"]
    assert start["decided"] and "Serve marks the replica running" in start["phases_s"], start
    assert all(s >= 0 for s in start["phases_s"].values()), start
    assert (tmp_path / "scale-to-zero-cpu.png").exists()
