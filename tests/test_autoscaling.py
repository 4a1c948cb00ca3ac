"""Autoscaling that really scales: the autoscaling experiment (lab/autoscaling.py) in its smoke mode,
the tutorial's own file under LLM_PROFILE=cpu-autoscale, goes from one replica to two under streaming
load and back to one, and no request is lost; its results file and plot are written."""

import json

import pytest

from lab import autoscaling
from tutorial import teardown

pytestmark = pytest.mark.deploys


def test_scales_out_under_load_and_back(tmp_path):
    rc = autoscaling.main(["--smoke"], tmp_path)
    result = json.loads((tmp_path / "autoscaling-cpu.json").read_text())
    assert teardown.leftovers() == []
    assert result["max_replicas"] == 2 and 0 < result["target_ongoing_requests"] < 1000, result
    assert result["scale_up_s"] is not None, f"no second replica within {autoscaling.SCALE_UP_S} s"
    assert result["scale_down_s"] is not None, f"still two replicas {autoscaling.SCALE_DOWN_S} s after the load"
    assert result["load"]["failed"] == 0 and result["load"]["broken_streams"] == 0, result["load"]
    assert result["max_replicas_seen"] == 2 and result["final_replicas"] == 1
    assert len([n for n in result["requests_per_replica"].values() if n > 0]) >= 2  # both replicas served
    # From the autoscaler's decision to the second replica's first answer, phase by phase, from Ray's logs.
    start = result["replica_start_s"]
    # Every engine step's log line was found, in order (the reader stops on a missing one), and each
    # phase is a gap between two of Ray's and vLLM's own stamps.
    assert start["decided"] and list(start["phases_s"]) == [name for name, _ in autoscaling.START_MARKS] + [
        "HAProxy sends it requests; Ray's metrics show it answered"], start
    assert min(start["phases_s"].values()) >= 0, start
    assert result["tensor_parallel_size"] == 1 and result["model"] == "SmolLM2-135M-Instruct"
    assert any(point[5] for point in result["timeline"])  # median time to first chunk while loaded
    assert (tmp_path / "autoscaling-cpu.png").stat().st_size > 10_000
    assert rc == 0, autoscaling.problems(result)  # main returns 1 exactly when the run missed a bar
