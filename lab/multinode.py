"""The notebook's "When one node is not enough", for real on one host: a head node and a worker
node that joins it, each with its own GPUs, the 70B's shape (fp8, random weights) in two pipeline
stages, one per node; then the same shape on one node with tensor parallelism, for comparison.

  python -m lab run multinode --record                      two nodes of one GPU: TP 1 x PP 2, against TP 2
  python -m lab run multinode --record --gpus-per-node 2    two nodes of two GPUs: TP 2 x PP 2, against TP 4
  python -m lab run multinode --smoke                       two CPU-only nodes, the small model

Measured on the two nodes: placement (Ray's state API), an answer, vLLM's KV cache against the
planner, the benchmark, then the worker node killed under load. The one-node side is the benchmark's
own run (--one-node RESULTS reuses an earlier run on the same kind of host). Writes
multinode-<gpu>x<n>.json and its plot.
What differs from two hosts, all for sharing one: each node gets its GPUs by CUDA_VISIBLE_DEVICES,
the worker its own temp dir, agent and node-manager ports, and Serve one proxy (HeadOnly), as both
nodes would bind port 8000; NCCL between the stages runs inside the host, not over a network.
"""

import argparse
import collections
import dataclasses
import datetime
import json
import os
import re
import threading
import time
from importlib import metadata
from pathlib import Path

import httpx
import psutil

import capacity
from lab import bench, launch, stream
from lab.bench_plot import plot
from lab.notebook_results import engine_lines, log_lines
from tutorial import gpus, placement, ready, teardown
from tutorial.profiles import PROFILES, SMALL_MODEL_DIR

ROOT = Path(__file__).resolve().parent.parent
WORKER = launch.Node(gpus="", num_cpus=8)  # on a GPU node its GPUs are set per run
LEVELS = [1, 16, 64]
LEVEL_S = 600  # each level's deadline, as the benchmark's default
LOAD = dict(bench.GPU_LOAD, min_prompts=8)  # the one-node run gets the same
LOSS_WATCH_S = 90  # how long clients keep sending after the worker node is killed
WEIGHTS = {"rehearsal-fp8": "70b-fp8", "rehearsal": "70b", "cpu": "smollm2"}  # the benchmark's name of each shape


def both_nodes_engine_lines() -> list[str]:
    """The engine's start-up lines from the head's and the worker node's Ray logs."""
    return engine_lines(log_lines()) + engine_lines(log_lines(f"{WORKER.temp_dir}/session_latest/logs"))


def kv_tokens(lines: list[str]) -> int:
    """vLLM's own count of the KV cache, from the engine's start-up lines."""
    found = [int(m.group(1).replace(",", "")) for line in lines if (m := re.search(r"GPU KV cache size: ([\d,]+)", line))]
    if not found:
        raise RuntimeError("no 'GPU KV cache size' line in the engine logs")
    return min(found)


def lose_worker_node(smoke: bool) -> dict:
    """Four clients keep asking; the worker node's processes are killed (as a host that dies);
    what the clients saw, and whether Serve recovered or failed within LOSS_WATCH_S."""
    worker = teardown.listener(WORKER.node_manager_port)
    sid = os.getsid(worker.pid)
    outcomes, stop, start = [], threading.Event(), time.monotonic()

    def ask(http, _) -> None:
        t = time.monotonic() - start
        outcomes.append((t, stream.chat(http, "What is 2 + 2?", 16, temperature=0)))

    threads = stream.clients(4, ask, stop=stop, timeout=60)
    time.sleep(5 if smoke else 20)
    killed_at = time.monotonic() - start
    victims = teardown.in_sessions({sid})
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    watch_s = 15 if smoke else LOSS_WATCH_S
    time.sleep(watch_s)
    stop.set()
    for t in threads:
        t.join(timeout=70)
    after = [o for o in outcomes if o[0] >= killed_at]
    failed = [o for o in after if not o[1].ok]
    return {
        "killed_processes": len(victims), "killed_at_s": round(killed_at, 1), "watched_s": watch_s,
        "requests_before": sum(o[0] < killed_at for o in outcomes),
        "failed_before": sum(o[0] < killed_at and not o[1].ok for o in outcomes),
        "requests_after": len(after), "failed_after": len(failed),
        "first_failure_after_s": round(min(o[0] for o in failed) - killed_at, 1) if failed else None,
        "answered_after_loss": sum(o[1].ok for o in after),
        "errors": collections.Counter(f"{o[1].status} {o[1].detail[:160]}" for o in failed).most_common(5),
        "app_status_at_end": ready.app_status(),
    }


def measure(profile: str, smoke: bool, logdir: Path) -> dict:
    """Placement, an answer, the KV cache against the planner, and the benchmark, on the running deployment."""
    where = placement.engine_placement()
    print(f"placement: {where['worker_nodes']} node(s) for {len(where['workers'])} engine worker(s)", flush=True)
    with httpx.Client(timeout=60, headers=stream.auth()) as http:
        answer = stream.chat(http, "What is 2 + 2?", 16, temperature=0)
    answer_ok = answer.ok and answer.tokens > 0
    print(f"answer: HTTP {answer.status}, {answer.tokens} tokens {answer.detail}", flush=True)
    shape = PROFILES[profile]()
    engine, model = shape["engine_kwargs"], shape.get("model_source", str(SMALL_MODEL_DIR))
    gpu = gpus.node_type()
    plan = None
    if not smoke:  # the planner knows GPUs; on the CPU vLLM sizes the cache from VLLM_CPU_KVCACHE_SPACE
        plan = capacity.plan(str(Path(model, "config.json")), gpu,
                             tensor_parallel_size=engine["tensor_parallel_size"],
                             pipeline_parallel_size=engine.get("pipeline_parallel_size", 1),
                             max_model_len=engine["max_model_len"], weight_dtype="fp8" if profile.endswith("fp8") else "bf16")
    lines = both_nodes_engine_lines()
    vllm_kv = kv_tokens(lines)
    print(f"KV cache: vLLM {vllm_kv} tokens, planner {plan and plan.kv_cache_tokens}", flush=True)

    class Running:  # the deployment on two nodes, for bench.sweep
        name, config, port = "ray-serve", "pp2-two-nodes", teardown.PORT

    levels, load = ([1, 2], bench.CPU_LOAD) if smoke else (LEVELS, LOAD)
    with bench.tempfile.TemporaryDirectory() as tmp:
        runs = bench.sweep(Running(), WEIGHTS[profile], model, levels, load,
                           Path(tmp), py_spy_levels=[], py_spy_s=0, logdir=logdir, level_s=LEVEL_S)
    return dict(
        gpu=gpu, gpu_count=len(gpus.detect()), engine_kwargs=engine,
        placement_group_config=shape.get("placement_group_config"), placement=where, answer_ok=answer_ok,
        answer_tokens=answer.tokens, vllm_kv_tokens=vllm_kv,
        planner_kv_tokens=plan and plan.kv_cache_tokens,
        planner=plan and dict(weights_gib_per_gpu=plan.weights_gib_per_gpu, other_gib_per_gpu=plan.other_gib_per_gpu,
                              kv_cache_gib_per_gpu=plan.kv_cache_gib_per_gpu),
        engine=lines, runs=runs)


def two_nodes(profile: str, gpus_per_node: int, smoke: bool, logdir: Path) -> dict:
    """Start the head and a worker node of `gpus_per_node` GPUs each (none with --smoke), deploy
    the tutorial's file across them, measure, then kill the worker node under load."""
    stages = {"REHEARSAL_PIPELINE_PARALLEL_SIZE": "2", "REHEARSAL_TENSOR_PARALLEL_SIZE": str(gpus_per_node)}
    os.environ.update(stages, LLM_PROFILE=profile)  # the profile is read here too, for the planner
    head = None if smoke else ",".join(map(str, range(gpus_per_node)))
    worker = dataclasses.replace(WORKER, gpus="" if smoke else ",".join(map(str, range(gpus_per_node, 2 * gpus_per_node))))
    with launch.Deployment("serve_llama_3_1_70b:app", {}, logdir / "two-nodes.log", ready_s=900, num_cpus=8,
                           head_gpus=head, workers=(worker,), preflight=True):
        found = measure(profile, smoke, logdir)
        # Kept at each step: a run cut short (a lost machine, a time limit) leaves what it measured.
        (logdir / "two-nodes.json").write_text(json.dumps(found, indent=2) + "\n")
        found["node_loss"] = lose_worker_node(smoke)
        print(f"node loss: {json.dumps(found['node_loss'])}", flush=True)
        (logdir / "two-nodes.json").write_text(json.dumps(found, indent=2) + "\n")
    return found


def one_node(weights: str, smoke: bool, out: Path, logdir: Path) -> dict:
    """The same shape on one node, tensor parallel over its GPUs: the benchmark's own run."""
    argv = (["--smoke", "--concurrency", "1", "2"] if smoke else
            ["--models", weights, "--concurrency", *map(str, LEVELS), "--min-prompts", str(LOAD["min_prompts"])])
    if bench.main([*argv, "--servers", "ray-serve", "--ray-configs", "tutorial", "--out", str(out),
                   "--logdir", str(logdir / "one-node")], out.parent) != 0:
        raise RuntimeError("the one-node benchmark failed (its output above says why)")
    return json.loads(out.read_text())


def record(pp: dict, tp: dict, gpus_per_node: int, results: Path) -> Path:
    one = "tp2-one-node" if gpus_per_node == 1 else f"tp{2 * gpus_per_node}-one-node"
    tp_runs = [dict(r, config=one) for r in tp["runs"] if r["config"] in ("tutorial", "default")]
    engine = pp["engine_kwargs"]
    result = {
        "date": datetime.date.today().isoformat(),
        "device": (f"{pp['gpu']} x{pp['gpu_count']}, one host, as two Ray nodes of {gpus_per_node} GPU(s) each"
                   if pp["gpu"] else f"CPU ({os.cpu_count()} cores), one host, as two Ray nodes"),
        "ray_version": metadata.version("ray"), "vllm_version": tp["vllm_version"],
        "torch_version": metadata.version("torch"),
        "nodes": len(pp["placement"]["nodes"]), "gpus_per_node": gpus_per_node if pp["gpu"] else 0,
        "tensor_parallel_size": engine["tensor_parallel_size"],
        "pipeline_parallel_size": engine.get("pipeline_parallel_size", 1),
        "max_model_len": engine["max_model_len"], "placement_group_config": pp["placement_group_config"],
        "placement_nodes": pp["placement"]["worker_nodes"], "placement": pp["placement"],
        "answer_ok": pp["answer_ok"], "vllm_kv_tokens": pp["vllm_kv_tokens"],
        "planner_kv_tokens": pp["planner_kv_tokens"],
        "planner_error_pct": pp["planner_kv_tokens"] and round(
            100 * (pp["planner_kv_tokens"] - pp["vllm_kv_tokens"]) / pp["vllm_kv_tokens"], 2),
        "planner": pp["planner"], "engine": pp["engine"],
        "bench": {"load": tp["load"], "runs": pp["runs"] + tp_runs,
                  "failed": {"pp2-two-nodes": sum(r["failed"] for r in pp["runs"]),
                             one: sum(r["failed"] for r in tp_runs)},
                  f"{one.split('-')[0]}_ready_s": [s["ready_s"] for s in tp["servers"]
                                                   if s["config"] in ("tutorial", "default")][0],
                  f"{one.split('-')[0]}_date": tp["date"], f"{one.split('-')[0]}_device": tp["device"]},
        "node_loss": pp.get("node_loss"),
    }
    out = results / (f"multinode-{pp['gpu'].lower()}x{pp['gpu_count']}.json" if pp["gpu"] else "multinode-cpu.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    draw(out)
    return out


def draw(path: Path) -> None:
    """The benchmark's picture beside the results file (bench_plot: throughput and TTFT)."""
    result = json.loads(path.read_text())
    plot({**result, "device": result["device"].split(",")[0], "runs": result["bench"]["runs"]}, path.with_suffix(".png"))


def main(argv: list[str], results: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="two CPU-only nodes, the small model, a few requests")
    p.add_argument("--gpus-per-node", type=int, default=1, help="GPUs of each of the two nodes")
    p.add_argument("--one-node", type=Path, help="an earlier one-node benchmark of the same shape on this kind of host")
    p.add_argument("--logdir", type=Path, default=Path("/tmp/multinode-logs"))
    args = p.parse_args(argv)
    args.logdir.mkdir(parents=True, exist_ok=True)
    # One GPU a node holds the 70B's shape only in fp8; two hold it in bf16.
    profile = "cpu" if args.smoke else "rehearsal-fp8" if args.gpus_per_node == 1 else "rehearsal"
    pp = two_nodes(profile, args.gpus_per_node, args.smoke, args.logdir)
    for name in ("REHEARSAL_PIPELINE_PARALLEL_SIZE", "REHEARSAL_TENSOR_PARALLEL_SIZE"):
        os.environ.pop(name)  # the one-node run uses every GPU of the node
    tp = (json.loads(args.one_node.read_text()) if args.one_node else
          one_node(WEIGHTS[profile], args.smoke, args.logdir / "one-node.json", args.logdir))
    print(f"multinode: wrote {record(pp, tp, args.gpus_per_node, results)} and its plot")
    return 0
