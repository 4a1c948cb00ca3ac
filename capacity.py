"""How many concurrent requests fit, estimated the way vLLM sizes its KV cache. Standard library only.

vLLM 0.26, the GPU stack's release (requirements-gpu.txt), gives the KV cache what is left of `gpu_memory_utilization x GPU memory` after the
weights, the activation peak of a profiling forward pass, the sampler's logits and the memory outside
PyTorch that grows during that pass. Maximum concurrency is the KV cache in tokens divided by
max_model_len: how many requests of full length fit at once.

  python capacity.py --model llama-3.1-70b --gpu A100-40G --tensor-parallel-size 8 --max-model-len 32768
  python capacity.py --model path/to/config.json --gpu H100 ... --json
"""

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

GIB = 1024**3
MODELS_DIR = Path(__file__).resolve().parent / "model_configs"
MODELS = {p.stem: p for p in sorted(MODELS_DIR.glob("*.json"))}

# The GPUs planned for, by Ray's accelerator_type: memory as the CUDA runtime reports it
# (cudaMemGetInfo's total, what vLLM multiplies by gpu_memory_utilization; slightly below the
# marketing figure and nvidia-smi's), the name nvidia-smi prints, and the nvidia.com/gpu.product
# label NVIDIA's GPU feature discovery puts on a Kubernetes node.
GPU_TABLE = {
    "A100-40G": (39.39, "NVIDIA A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB"),
    "A100-80G": (79.15, "NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB"),
    "L40S": (44.31, "NVIDIA L40S", "NVIDIA-L40S"),
    "H100": (79.19, "NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
    "H200": (139.81, "NVIDIA H200", "NVIDIA-H200"),
}
GPUS = {gpu: gib for gpu, (gib, _, _) in GPU_TABLE.items()}  # GiB
GPU_NAMES = {gpu: name for gpu, (_, name, _) in GPU_TABLE.items()}  # nvidia-smi
GPU_PRODUCTS = {gpu: label for gpu, (_, _, label) in GPU_TABLE.items()}  # Kubernetes node label
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92  # vLLM 0.26's default (0.9 before)
BLOCK_SIZE = 16  # tokens per KV cache block; vLLM rounds the cache down to whole blocks
REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")

# Memory outside PyTorch that vLLM 0.26 counts against the KV cache: only what grows during its
# profiling pass, 0.06 to 0.07 GiB per GPU at tensor parallel 2 and 4, eager or compiled, on H100 and
# H200 (docs/results/capacity-validation.json). The CUDA context and NCCL's buffers exist before that
# pass, and the CUDA graph pool is captured after it, so they come out of the memory vLLM leaves free
# (1 - gpu_memory_utilization), not out of the KV cache.
NON_TORCH_GIB = 0.07


def server_defaults(gpu: str) -> tuple[int, int]:
    """`vllm serve`'s (max_num_seqs, max_num_batched_tokens) for the GPU, as Ray Serve LLM gets them."""
    big_gpu = GPUS[gpu] >= 70 and not gpu.startswith("A100")
    return (1024, 8192) if big_gpu else (256, 2048)


class PlanError(ValueError):
    """Input the planner cannot use; main() prints it on one line and exits 2."""


@dataclass
class Plan:
    model: str
    gpu: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    max_model_len: int
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    weight_dtype: str
    kv_cache_dtype: str
    replicas: int
    gpus_per_replica: int
    gpu_memory_gib: float
    weights_gib_per_gpu: float
    other_gib_per_gpu: float
    kv_cache_gib_per_gpu: float
    kv_bytes_per_token_per_gpu: int
    kv_cache_tokens: int
    max_concurrency: float
    total_max_concurrency: float
    fits: bool
    reason: str


def load_model(name_or_path: str) -> tuple[str, dict]:
    path = MODELS.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        raise PlanError(f"unknown model {name_or_path!r}: give a config.json path or one of {', '.join(MODELS)}")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PlanError(f"{path}: not a readable JSON config ({e})") from None
    missing = [k for k in REQUIRED if not isinstance(config.get(k), int) or config[k] <= 0]
    if missing:
        raise PlanError(f"{path}: config lacks positive integer fields {', '.join(missing)}")
    return (name_or_path if name_or_path in MODELS else path.name), config


def attention_shape(c: dict) -> tuple[int, int, int]:
    """(attention heads, KV heads, head dimension); configs may leave the last two implicit."""
    heads = c["num_attention_heads"]
    return heads, c.get("num_key_value_heads", heads), c.get("head_dim") or c["hidden_size"] // heads


def parameters(c: dict) -> tuple[int, int]:
    """(parameters in linear layers, parameters in embeddings and lm_head)."""
    h = c["hidden_size"]
    heads, kv_heads, head_dim = attention_shape(c)
    attention = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2  # q, o, k, v
    mlp = 3 * h * c["intermediate_size"]  # gate, up, down
    linear = c["num_hidden_layers"] * (attention + mlp)
    embeddings = c["vocab_size"] * h * (1 if c.get("tie_word_embeddings") else 2)
    return linear, embeddings


def plan(model: str, gpu: str, tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
         max_model_len: int = 8192, gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
         weight_dtype: str = "bf16", kv_cache_dtype: str = "auto", replicas: int = 1,
         max_num_batched_tokens: int | None = None) -> Plan:
    """max_num_batched_tokens: the profiling pass's size; None takes `vllm serve`'s default for
    the GPU, which Ray Serve LLM gets too (vLLM's offline LLM class takes twice that on H100/H200)."""
    name, c = load_model(model)
    if gpu not in GPUS:
        raise PlanError(f"unknown GPU {gpu!r}: one of {', '.join(GPUS)}")
    tp, pp = tensor_parallel_size, pipeline_parallel_size
    memory = GPUS[gpu] * GIB
    max_num_seqs, server_batched_tokens = server_defaults(gpu)
    max_batched_tokens = server_batched_tokens if max_num_batched_tokens is None else max_num_batched_tokens
    for label, value in [("tensor-parallel-size", tp), ("pipeline-parallel-size", pp),
                         ("max-model-len", max_model_len), ("replicas", replicas),
                         ("max-num-batched-tokens", max_batched_tokens)]:
        if value <= 0:
            raise PlanError(f"--{label} must be positive, got {value}")
    if not 0 < gpu_memory_utilization <= 1:
        raise PlanError(f"--gpu-memory-utilization must be in (0, 1], got {gpu_memory_utilization}")
    heads, kv_heads, head_dim = attention_shape(c)
    if heads % tp:
        raise PlanError(f"--tensor-parallel-size {tp} does not divide the {heads} attention heads")
    if kv_heads % tp and tp % kv_heads:  # vLLM shards KV heads, or replicates them past tp = kv_heads
        raise PlanError(f"--tensor-parallel-size {tp} does not divide the {kv_heads} KV heads (nor do they divide it)")

    linear, embeddings = parameters(c)
    weight_bytes = linear * (1 if weight_dtype == "fp8" else 2) + embeddings * 2  # embeddings stay 16-bit
    weights = weight_bytes / (tp * pp)

    h = c["hidden_size"]
    activations = max_batched_tokens * (4 * h + 2 * c["intermediate_size"] // tp) * 2
    logits = max_num_seqs * c["vocab_size"] * 4  # the sampler's fp32 logits, full vocabulary on every GPU
    other = activations + logits + NON_TORCH_GIB * GIB

    layers_per_gpu = -(-c["num_hidden_layers"] // pp)
    kv_per_token = layers_per_gpu * 2 * max(kv_heads // tp, 1) * head_dim * (1 if kv_cache_dtype == "fp8" else 2)
    kv_bytes = gpu_memory_utilization * memory - weights - other
    kv_tokens = max(int(kv_bytes // (kv_per_token * BLOCK_SIZE)) * BLOCK_SIZE, 0)

    if kv_bytes <= 0:
        reason = (f"weights need {weights / GIB:.1f} GiB per GPU and vLLM's other needs about {other / GIB:.1f} GiB, "
                  f"more than {gpu_memory_utilization:.2f} x {GPUS[gpu]:.1f} GiB: add GPUs, quantize, or use larger GPUs")
    elif kv_tokens < max_model_len:
        reason = (f"the KV cache holds {kv_tokens} tokens, fewer than one {max_model_len}-token request: "
                  f"lower max_model_len or free memory")
    else:
        reason = ""
    concurrency = round(kv_tokens / max_model_len, 2)
    return Plan(
        model=name, gpu=gpu, tensor_parallel_size=tp, pipeline_parallel_size=pp, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization, max_num_batched_tokens=max_batched_tokens,
        weight_dtype=weight_dtype, kv_cache_dtype=kv_cache_dtype,
        replicas=replicas, gpus_per_replica=tp * pp, gpu_memory_gib=GPUS[gpu],
        weights_gib_per_gpu=round(weights / GIB, 2), other_gib_per_gpu=round(other / GIB, 2),
        kv_cache_gib_per_gpu=round(max(kv_bytes, 0) / GIB, 2), kv_bytes_per_token_per_gpu=kv_per_token,
        kv_cache_tokens=kv_tokens, max_concurrency=concurrency, total_max_concurrency=round(concurrency * replicas, 2),
        fits=not reason, reason=reason,
    )


def table(p: Plan) -> str:
    rows = [
        ("model / GPU", f"{p.model} on {p.gpus_per_replica} x {p.gpu} ({p.gpu_memory_gib:.1f} GiB each)"),
        ("parallelism", f"tensor {p.tensor_parallel_size} x pipeline {p.pipeline_parallel_size}, {p.replicas} replica(s)"),
        ("weights per GPU", f"{p.weights_gib_per_gpu:.2f} GiB ({p.weight_dtype})"),
        ("vLLM's other per GPU", f"{p.other_gib_per_gpu:.2f} GiB (activations, logits, memory outside PyTorch)"),
        ("KV cache per GPU", f"{p.kv_cache_gib_per_gpu:.2f} GiB at gpu_memory_utilization {p.gpu_memory_utilization}"),
        ("KV bytes per token", f"{p.kv_bytes_per_token_per_gpu} per GPU (kv_cache_dtype {p.kv_cache_dtype})"),
        ("KV cache tokens", f"{p.kv_cache_tokens:,}"),
        ("max concurrency", f"{p.max_concurrency:.2f}x at {p.max_model_len:,} tokens per request"
                            + (f", {p.total_max_concurrency:.2f}x over {p.replicas} replicas" if p.replicas > 1 else "")),
        ("fits", "yes" if p.fits else f"NO: {p.reason}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help=f"a config.json path or one of: {', '.join(MODELS)}")
    parser.add_argument("--gpu", required=True, help=f"one of: {', '.join(GPUS)}")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--pipeline-parallel-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--gpu-memory-utilization", type=float, default=DEFAULT_GPU_MEMORY_UTILIZATION)
    parser.add_argument("--weight-dtype", choices=["bf16", "fp8"], default="bf16")
    parser.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-num-batched-tokens", type=int, help="as vLLM's; default: vllm serve's for the GPU")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = vars(parser.parse_args(argv))
    as_json = args.pop("json")
    try:
        p = plan(**args)
    except PlanError as e:
        print(f"capacity.py: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(p), indent=2) if as_json else table(p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
