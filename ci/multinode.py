"""Measure the deployment ci/multinode.sh started across two Ray nodes, then write the results.

  python -m ci.multinode measure OUT.json         placement, answer, KV cache, benchmark
  python -m ci.multinode lose-node OUT.json       kill the worker node under load, add what clients saw
  python -m ci.multinode record PP.json TP.json   docs/results/multinode-<gpu>x<n>.json and .png
  python -m ci.multinode plot RESULTS.json        redraw the .png from a results file

`measure` and `lose-node` run against the running endpoint; `lose-node` kills the worker node.
`record` adds the one-node tensor-parallel benchmark (benchmarks/bench.py's output) for comparison.
"""

import collections
import datetime
import json
import os
import re
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import psutil

import capacity
from benchmarks import bench
from benchmarks.bench_plot import plot
from ci.notebook_results import engine_lines, log_lines
from tutorial import facts, gpus, placement, ready, teardown
from tutorial.profiles import PROFILES

ROOT = Path(__file__).resolve().parent.parent
WORKER_DIR = "/tmp/ray-worker-node"  # the worker node's --temp-dir (ci/multinode.sh)
WORKER_PORT = 6380  # the worker node's --node-manager-port: how to find its processes
LEVELS = [1, 16, 64]
LEVEL_S = 600  # each level's deadline, as the benchmark's default
LOAD = dict(bench.GPU_LOAD, min_prompts=8)  # ci/multinode.sh gives the one-node run the same
LOSS_WATCH_S = 90  # how long clients keep sending after the worker node is killed


def both_nodes_engine_lines() -> list[str]:
    """The engine's start-up lines from the head's and the worker node's Ray logs."""
    return engine_lines(log_lines()) + engine_lines(log_lines(f"{WORKER_DIR}/session_latest/logs"))


def kv_tokens(lines: list[str]) -> int:
    """vLLM's own count of the KV cache, from the engine's start-up lines."""
    found = [int(m.group(1).replace(",", "")) for line in lines if (m := re.search(r"GPU KV cache size: ([\d,]+)", line))]
    if not found:
        raise RuntimeError("no 'GPU KV cache size' line in the engine logs")
    return min(found)


def chat(max_tokens: int = 16, timeout: float = 60) -> tuple[int, dict | str]:
    status, body = ready.request("POST", f"{ready.BASE_URL}/v1/chat/completions", {
        "model": facts.MODEL_ID, "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "max_tokens": max_tokens, "temperature": 0}, timeout=timeout)
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body[:200]


def lose_worker_node() -> dict:
    """Four clients keep asking; the worker node's processes are killed (as a host that dies);
    what the clients saw, and whether Serve recovered or failed within LOSS_WATCH_S."""
    worker = teardown.listener(WORKER_PORT)
    sid = os.getsid(worker.pid)
    outcomes, stop, start = [], threading.Event(), time.monotonic()

    def client():
        while not stop.is_set():
            t = time.monotonic() - start
            try:
                status, body = chat(timeout=60)
                outcomes.append((t, status, "" if status == 200 else str(body)[:160]))
            except OSError as e:  # refused, reset or timed out
                outcomes.append((t, None, f"{type(e).__name__}: {e}"[:160]))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(20)
    killed_at = time.monotonic() - start
    victims = teardown.in_sessions({sid})
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    time.sleep(LOSS_WATCH_S)
    stop.set()
    for t in threads:
        t.join(timeout=70)
    after = [o for o in outcomes if o[0] >= killed_at]
    failed = [o for o in after if o[1] != 200]
    return {
        "killed_processes": len(victims), "killed_at_s": round(killed_at, 1), "watched_s": LOSS_WATCH_S,
        "requests_before": sum(o[0] < killed_at for o in outcomes),
        "failed_before": sum(o[0] < killed_at and o[1] != 200 for o in outcomes),
        "requests_after": len(after), "failed_after": len(failed),
        "first_failure_after_s": round(min(o[0] for o in failed) - killed_at, 1) if failed else None,
        "answered_after_loss": sum(o[1] == 200 for o in after),
        "errors": collections.Counter(f"{o[1]} {o[2]}" for o in failed).most_common(5),
        "app_status_at_end": ready.app_status(),
    }


def measure(out: Path) -> None:
    where = placement.engine_placement()
    print(f"placement: {where['worker_nodes']} node(s) for {len(where['workers'])} engine worker(s)", flush=True)
    status, body = chat()
    usage = body.get("usage", {}) if isinstance(body, dict) else {}
    answer_ok = status == 200 and usage.get("completion_tokens", 0) > 0 and bool(body["choices"][0]["finish_reason"])
    print(f"answer: HTTP {status}, {usage.get('completion_tokens')} tokens", flush=True)
    rehearsal = PROFILES["rehearsal-fp8"]()
    engine = rehearsal["engine_kwargs"]
    gpu = gpus.node_type()
    plan = capacity.plan(str(Path(rehearsal["model_source"], "config.json")), gpu,
                         tensor_parallel_size=engine["tensor_parallel_size"],
                         pipeline_parallel_size=engine["pipeline_parallel_size"],
                         max_model_len=engine["max_model_len"], weight_dtype="fp8")
    lines = both_nodes_engine_lines()
    vllm_kv = kv_tokens(lines)
    print(f"KV cache: vLLM {vllm_kv} tokens, planner {plan.kv_cache_tokens}", flush=True)

    class Running:  # the deployment ci/multinode.sh started, for bench.sweep
        name, config, port = "ray-serve", "pp2-two-nodes", teardown.PORT

    with bench.tempfile.TemporaryDirectory() as tmp:
        runs = bench.sweep(Running(), "70b-fp8", rehearsal["model_source"], LEVELS, LOAD, Path(tmp),
                           py_spy_levels=[], py_spy_s=0, logdir=Path(tmp), level_s=LEVEL_S)
    out.write_text(json.dumps(dict(
        gpu=gpu, gpu_count=len(gpus.detect()), engine_kwargs=engine,
        placement_group_config=rehearsal["placement_group_config"], placement=where, answer_ok=answer_ok,
        answer_tokens=usage.get("completion_tokens"), vllm_kv_tokens=vllm_kv, planner_kv_tokens=plan.kv_cache_tokens,
        planner=dict(weights_gib_per_gpu=plan.weights_gib_per_gpu, other_gib_per_gpu=plan.other_gib_per_gpu,
                     kv_cache_gib_per_gpu=plan.kv_cache_gib_per_gpu),
        engine=lines, runs=runs), indent=2) + "\n")


def lose_node(path: Path) -> None:
    found = json.loads(path.read_text())
    found["node_loss"] = lose_worker_node()
    print(f"node loss: {json.dumps(found['node_loss'])}", flush=True)
    path.write_text(json.dumps(found, indent=2) + "\n")


def record(pp_path: Path, tp_path: Path) -> Path:
    pp, tp = json.loads(pp_path.read_text()), json.loads(tp_path.read_text())
    tp_runs = [dict(r, config="tp2-one-node") for r in tp["runs"] if r["config"] == "default"]
    engine = pp["engine_kwargs"]
    result = {
        "date": datetime.date.today().isoformat(),
        "device": f"{pp['gpu']} x{pp['gpu_count']}, one host, as two Ray nodes of one GPU each",
        "ray_version": metadata.version("ray"), "vllm_version": metadata.version("vllm"),
        "torch_version": metadata.version("torch"),
        "nodes": len(pp["placement"]["nodes"]), "gpus_per_node": 1,
        "tensor_parallel_size": engine["tensor_parallel_size"],
        "pipeline_parallel_size": engine["pipeline_parallel_size"],
        "max_model_len": engine["max_model_len"], "placement_group_config": pp["placement_group_config"],
        "placement_nodes": pp["placement"]["worker_nodes"], "placement": pp["placement"],
        "answer_ok": pp["answer_ok"], "vllm_kv_tokens": pp["vllm_kv_tokens"],
        "planner_kv_tokens": pp["planner_kv_tokens"],
        "planner_error_pct": round(100 * (pp["planner_kv_tokens"] - pp["vllm_kv_tokens"]) / pp["vllm_kv_tokens"], 2),
        "planner": pp["planner"], "engine": pp["engine"],
        "bench": {"load": tp["load"], "runs": pp["runs"] + tp_runs,
                  "failed": {"pp2-two-nodes": sum(r["failed"] for r in pp["runs"]),
                             "tp2-one-node": sum(r["failed"] for r in tp_runs)},
                  "tp2_ready_s": [s["ready_s"] for s in tp["servers"] if s["config"] == "default"][0],
                  "tp2_date": tp["date"], "tp2_device": tp["device"]},
        "node_loss": pp.get("node_loss"),
    }
    out = ROOT / "docs/results" / f"multinode-{pp['gpu'].lower()}x{pp['gpu_count']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    draw(out)
    return out


def draw(path: Path) -> None:
    """The benchmark's picture beside the results file (bench_plot: throughput and TTFT)."""
    result = json.loads(path.read_text())
    plot({**result, "device": result["device"].split(",")[0], "runs": result["bench"]["runs"]}, path.with_suffix(".png"))


def main(argv: list[str]) -> int:
    if argv[:1] == ["measure"]:
        measure(Path(argv[1]))
    elif argv[:1] == ["lose-node"]:
        lose_node(Path(argv[1]))
    elif argv[:1] == ["record"]:
        print(f"wrote {record(Path(argv[1]), Path(argv[2]))}")
    elif argv[:1] == ["plot"]:
        draw(Path(argv[1]))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
