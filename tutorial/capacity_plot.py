"""The notebook's capacity figures for the 70B model: a table and a plot from capacity.py."""

from pathlib import Path

import capacity

MAX_MODEL_LENS = [8192, 16384, 32768, 131072]
GPUS = ["A100-40G", "A100-80G", "H100", "H200"]
VARIANTS = {  # label: (weight dtype, KV cache dtype)
    "bf16": ("bf16", "auto"),
    "FP8 weights": ("fp8", "auto"),
    "FP8 weights + KV": ("fp8", "fp8"),
}
PNG = Path(__file__).resolve().parent.parent / "docs" / "capacity-llama-3.1-70b.png"


def concurrency(gpu: str, max_model_len: int, variant: str) -> float:
    weights, kv = VARIANTS[variant]
    p = capacity.plan("llama-3.1-70b", gpu, tensor_parallel_size=8, max_model_len=max_model_len,
                      weight_dtype=weights, kv_cache_dtype=kv)
    return p.max_concurrency if p.fits else 0.0


def table() -> str:
    """Markdown: maximum concurrency per replica of 8 GPUs, for each GPU, length and precision."""
    header = "| GPU (x8) | precision | " + " | ".join(f"{n // 1024}k" for n in MAX_MODEL_LENS) + " |"
    rows = [header, "|" + "---|" * (len(MAX_MODEL_LENS) + 2)]
    for gpu in GPUS:
        for variant in VARIANTS:
            cells = [f"{concurrency(gpu, n, variant):.1f}" for n in MAX_MODEL_LENS]
            rows.append(f"| {gpu} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


TENSOR_PARALLEL_SIZES = [1, 2, 4, 8]


def smallest_replica(gpu: str, weights: str, max_model_len: int = 32768) -> str:
    """The fewest GPUs of one node (tensor parallel) that hold the 70B and one request of max_model_len,
    and how many such requests fit there."""
    for tp in TENSOR_PARALLEL_SIZES:
        p = capacity.plan("llama-3.1-70b", gpu, tensor_parallel_size=tp, max_model_len=max_model_len, weight_dtype=weights)
        if p.fits:
            return f"{tp} ({p.max_concurrency:.1f}x)"
    return "more than 8"


def gpu_table() -> str:
    """Markdown: per GPU type, the accelerator_type to set and the smallest tensor-parallel size for the 70B."""
    rows = ["| GPU (`nvidia-smi`) | `accelerator_type` | tensor parallel, bf16 weights | tensor parallel, fp8 weights |",
            "|---|---|---|---|"]
    for gpu, name in capacity.GPU_NAMES.items():
        rows.append(f"| {name} | `\"{gpu}\"` | {smallest_replica(gpu, 'bf16')} | {smallest_replica(gpu, 'fp8')} |")
    return "\n".join(rows)


def plot(path: Path = PNG) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(13, 4), sharey=True)
    for ax, variant in zip(axes, VARIANTS):
        # A100-80G and H100 have nearly the same memory: their lines overlap unless drawn apart.
        for gpu, (line, marker) in zip(GPUS, [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]):
            ax.plot(MAX_MODEL_LENS, [concurrency(gpu, n, variant) for n in MAX_MODEL_LENS], line, marker=marker,
                    markersize=7 if line == "--" else 5, label=gpu)
        ax.set(title=f"Llama 3.1 70B, TP 8, {variant}", xscale="log", yscale="log", xlabel="max_model_len (tokens)")
        ax.set_xticks(MAX_MODEL_LENS, [f"{n // 1024}k" for n in MAX_MODEL_LENS])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("max concurrent requests per replica")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})  # no version stamp: reproducible bytes
    plt.close(fig)
    return path
