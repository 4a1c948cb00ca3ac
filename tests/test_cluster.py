"""The tutorial on a real two-node Ray cluster on this machine, started by the launch recipe
(lab/launch.py): a head without GPUs or CPUs for work, the usual layout on Kubernetes, and a worker
node that joins it with `ray start --address`, declaring two GPUs of type H100 and the CPUs, then
the small model deployed onto it. Ray schedules by declared resources, so the CPU machine stands in
for a GPU node. What differs from two hosts: both raylets share this host's network ports (so Serve
runs one HTTP proxy, on the head), and the worker keeps its files in a directory of its own, as it
would on its own disk.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import launch
from tutorial import facts, ready

pytestmark = pytest.mark.deploys

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, RAY_AUTH_MODE="token")
ENV.pop("LLM_PROFILE", None)  # the 70B default: 8 x A100-40G
WORKER = launch.Node(gpus="0,1", num_cpus=4, resources={"accelerator_type:H100": 1})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    log = tmp_path_factory.mktemp("cluster") / "launch.log"
    try:
        # Serve's high-throughput mode keeps 1,000 log records per replica in memory and writes them at an error or
        # when full, so a healthy replica's log is still empty here; this test is about finding it on the worker.
        env = {"LLM_PROFILE": "cpu", "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1"}
        with launch.Deployment("serve_llama_3_1_70b:app", env, log, ready_s=900, head_cpus=0,
                               head_gpus="", workers=(WORKER,)) as deployment:
            yield deployment
    finally:
        shutil.rmtree(WORKER.temp_dir, ignore_errors=True)


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


# Run where the cluster's token mode is set before Ray is imported, as in the notebook's shells.
WHERE_IT_RUNS = """
import glob, json, os
from ray.util.state import list_nodes
from tutorial import metrics, placement, ready
(worker,) = [n for n in list_nodes(filters=[("state", "=", "ALIVE")]) if not n.is_head_node]
print(json.dumps({
    "worker": worker.node_id,
    "engines": sorted({r["node_id"] for r in placement.engine_placement()["replicas"]}),
    "local_logs": glob.glob(os.path.join(ready.LOG_DIR, "replica_*LLMServer*")),
    "tail": ready.log_tail(lines=400),
    "head_ttft": metrics.scrape([metrics.METRICS_URL]).get(f"{metrics.TTFT}_count", 0),
    "cluster_ttft": metrics.wait_for_engine_metrics(min_requests=1)[f"{metrics.TTFT}_count"],
}))
"""


def test_a_replica_on_the_worker_node_answers_and_its_logs_and_metrics_are_found(cluster):
    status, body = ready.request("POST", f"{ready.BASE_URL}/v1/chat/completions", {
        "model": facts.MODEL_ID, "messages": [{"role": "user", "content": "What is 2+2? Answer with a number."}],
        "max_tokens": 8, "temperature": 0})
    assert status == 200 and "4" in json.loads(body)["choices"][0]["message"]["content"], body

    out = subprocess.run([sys.executable, "-c", WHERE_IT_RUNS], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["engines"] == [seen["worker"]], seen  # the engine replica runs on the worker node
    shown = subprocess.run([sys.executable, "-m", "tutorial.placement"], cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and f"on node {seen['worker'][:8]} " in shown.stdout, shown.stdout + shown.stderr
    # Its log is not among the head's files; Ray's log API finds it on the worker.
    assert seen["local_logs"] == []
    (header,) = [line for line in seen["tail"].splitlines() if line.startswith("-----") and "LLMServer" in line]
    assert "(head)" not in header and "Started vLLM engine" in seen["tail"], seen["tail"][-2000:]
    # Its metrics are on the worker's endpoint, which the head lists for Prometheus.
    assert seen["head_ttft"] == 0 and seen["cluster_ttft"] >= 1, seen
