"""Start vLLM for each case, read the KV cache size it logs, and set it beside capacity.py's.

Runs on a GPU node with vLLM installed; writes ci/results/capacity-validation.json (or --out).
Each case is its own process: vLLM sizes its KV cache once, at engine start.
"""

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import capacity  # noqa: E402
from tutorial import gpus  # noqa: E402
from model_dirs import checkpoint  # noqa: E402

# (planner model, max_model_len, enforce_eager): real weights for SmolLM2, dummy for the 8B shape.
CASES = [
    ("smollm2-135m", 2048, True),
    ("smollm2-135m", 8192, True),  # its max_position_embeddings
    ("tests/data/llama-3.1-8b-vocab49152.json", 4096, True),
]
ENGINE = """
import sys
from vllm import LLM
LLM(model=sys.argv[1], max_model_len=int(sys.argv[2]), load_format=sys.argv[3], enforce_eager=sys.argv[4] == "1")
"""


def run_case(model: str, max_model_len: int, eager: bool, gpu: str, workdir: Path) -> dict:
    path, load_format = checkpoint(model, workdir)
    out = subprocess.run([sys.executable, "-c", ENGINE, path, str(max_model_len), load_format, str(int(eager))],
                         capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    tokens = re.search(r"GPU KV cache size: ([\d,]+) tokens", log)
    conc = re.search(r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x", log)
    if out.returncode or not (tokens and conc):
        sys.exit(f"vLLM failed for {model} at {max_model_len}:\n{log[-3000:]}")
    p = capacity.plan(model if model in capacity.MODELS else str(ROOT / model), gpu,
                      max_model_len=max_model_len, enforce_eager=eager)
    vllm_tokens = int(tokens.group(1).replace(",", ""))
    return {
        "model": Path(model).stem, "gpu": gpu, "tensor_parallel_size": 1, "max_model_len": max_model_len,
        "gpu_memory_utilization": p.gpu_memory_utilization, "enforce_eager": eager,
        "vllm_kv_tokens": vllm_tokens, "planner_kv_tokens": p.kv_cache_tokens,
        "vllm_max_concurrency": float(conc.group(1)), "planner_max_concurrency": p.max_concurrency,
        "error_pct": round(100 * (p.kv_cache_tokens - vllm_tokens) / vllm_tokens, 2),
        "source": "this script",
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "ci/results/capacity-validation.json")
    args = parser.parse_args(argv)
    found = gpus.detect()
    gpu = gpus.node_type()
    with tempfile.TemporaryDirectory() as tmp:
        cases = [run_case(m, n, e, gpu, Path(tmp)) for m, n, e in CASES]
    result = {
        "device": f"{found[0][0]} ({found[0][1]} MiB)", "date": datetime.date.today().isoformat(),
        "vllm_version": metadata.version("vllm"), "torch_version": metadata.version("torch"), "cases": cases,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
