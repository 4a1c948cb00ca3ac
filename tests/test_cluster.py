"""Preflight against a real two-node Ray cluster on this machine: a head without GPUs, the usual
layout on Kubernetes, and a worker node that joins it with `ray start --address`, declaring two
GPUs of type H100. Ray schedules by declared resources, so the CPU machine stands in for a GPU
node; what differs from two hosts is only that both raylets share this host's ports and /tmp/ray.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tutorial import teardown

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, RAY_AUTH_MODE="token")
ENV.pop("LLM_PROFILE", None)  # the 70B default: 8 x A100-40G


def ray(*args: str) -> None:
    out = subprocess.run(["ray", *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster():
    assert not teardown.leftovers(), f"something already runs here: {teardown.leftovers()}"
    try:
        ray("get-auth-token", "--generate")
        ray("start", "--head", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats")
        # A second raylet on the same host needs its own agent port; the rest Ray picks itself.
        ray("start", "--address", "127.0.0.1:6379", "--num-cpus", "1", "--num-gpus", "2",
            "--resources", json.dumps({"accelerator_type:H100": 1}), "--dashboard-agent-listen-port", "52366")
        yield
    finally:
        teardown.shutdown()
        assert not teardown.leftovers(), teardown.leftovers()


def test_preflight_reads_every_node_from_ray(cluster):
    code = "import json; from dataclasses import asdict; from tutorial.preflight import cluster_nodes; " \
           "print(json.dumps([dict(asdict(n), gpu_types=sorted(n.gpu_types)) for n in cluster_nodes()]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    nodes = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted((n["gpus"], n["gpu_types"], n["address"].endswith("(head)")) for n in nodes) == [
        (0, [], True), (2, ["H100"], False)], nodes


def test_preflight_names_the_nodes_when_the_cluster_lacks_the_gpus(cluster):
    out = subprocess.run([sys.executable, "-m", "tutorial.preflight"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1
    (gpu_line,) = [line for line in out.stdout.splitlines() if line.startswith("FAIL GPUs:")]
    assert "needs 8 x A100-40G" in gpu_line and "the Ray cluster's 2 node(s) have 0" in gpu_line, gpu_line
    assert "(head): no GPU" in gpu_line and ": 2 x H100" in gpu_line, gpu_line
    assert "port 6379" not in out.stdout  # the running head's own port is no conflict
