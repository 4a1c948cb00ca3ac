"""One PNG from a lab/bench.py results file: output throughput and median TTFT per concurrency."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"vllm": ("black", "-", "o"), "default": ("tab:red", "--", "s"), "tuned": ("tab:blue", "-", "^"),
         "tutorial": ("tab:blue", "-", "^"), "python-proxy": ("tab:red", "--", "s"),
         "stream-0": ("tab:orange", "-.", "v"), "tp2-one-node": ("tab:red", "--", "s"),
         "tp4-one-node": ("tab:red", "--", "s"), "pp2-two-nodes": ("tab:green", "-", "D")}
# One name per mode across the results files ("tuned" and "default" are the older files' names).
LABELS = {"vllm": "vllm serve", "tutorial": "Ray Serve LLM, as the tutorial deploys it",
          "tuned": "Ray Serve LLM, as the tutorial deploys it", "python-proxy": "Ray Serve LLM, Ray's default mode",
          "default": "Ray Serve LLM, Ray's default mode", "stream-0": "Ray's default mode, every chunk sent at once",
          "tp2-one-node": "tensor parallel 2, one node", "tp4-one-node": "tensor parallel 4, one node",
          "pp2-two-nodes": "pipeline parallel 2, two nodes"}
# The shapes with random weights say so: their speed is the real model's, their text is noise.
MODELS = {"smollm2": "SmolLM2-135M", "8b": "Llama 3.1 8B's shape, random weights",
          "70b": "Llama 3.1 70B's shape, bf16, random weights", "70b-fp8": "Llama 3.1 70B's shape, fp8, random weights"}


def plot(result: dict, path: Path) -> None:
    models = list(dict.fromkeys(r["model"] for r in result["runs"]))
    fig, axes = plt.subplots(2, len(models), figsize=(5.5 * len(models), 7), squeeze=False)
    for col, model in enumerate(models):
        levels = sorted({r["concurrency"] for r in result["runs"] if r["model"] == model})
        for config in dict.fromkeys(r["config"] for r in result["runs"]):
            runs = sorted((r for r in result["runs"] if r["model"] == model and r["config"] == config),
                          key=lambda r: r["concurrency"])
            if not runs:
                continue
            color, line, marker = STYLE.get(config, ("gray", ":", "x"))
            label = LABELS.get(config, f"Ray Serve LLM ({config})")
            xs = [r["concurrency"] for r in runs]
            for row, field in enumerate(("output_throughput", "median_ttft_ms")):
                axes[row][col].plot(xs, [r[field] for r in runs], line, color=color, marker=marker, label=label)
        top, bottom = axes[0][col], axes[1][col]
        name = MODELS.get(model, model)
        top.set_title(f"{name}\noutput tokens/s (higher is better)", fontsize=10)
        bottom.set_title(f"{name}\nmedian time to first token, ms (lower is better)", fontsize=10)
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [str(c) for c in levels])  # the levels measured, not powers of two
            ax.minorticks_off()
            ax.set_xlabel("concurrent requests")
            ax.grid(True, alpha=0.3)
        bottom.set_yscale("log")
        top.legend(fontsize=8)
    fig.suptitle(f"{result['device']}, Ray {result['ray_version']}, vLLM {result['vllm_version']}, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)

