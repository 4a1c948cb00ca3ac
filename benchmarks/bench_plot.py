"""One PNG from a benchmarks/bench.py results file: output throughput and median TTFT per concurrency."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"vllm": ("black", "-", "o"), "default": ("tab:red", "--", "s"), "tuned": ("tab:blue", "-", "^"),
         "tutorial": ("tab:blue", "-", "^"), "python-proxy": ("tab:red", "--", "s"),
         "stream-0": ("tab:orange", "-.", "v"), "tp2-one-node": ("tab:red", "--", "s"),
         "pp2-two-nodes": ("tab:green", "-", "D")}
# One name per mode across the results files ("tuned" and "default" are the older files' names).
LABELS = {"vllm": "vllm serve", "tutorial": "Ray Serve LLM, as the tutorial deploys it",
          "tuned": "Ray Serve LLM, as the tutorial deploys it", "python-proxy": "Ray Serve LLM, Ray's default mode",
          "default": "Ray Serve LLM, Ray's default mode", "stream-0": "Ray's default mode, every chunk sent at once",
          "tp2-one-node": "tensor parallel 2, one node", "pp2-two-nodes": "pipeline parallel 2, two nodes"}
# The shapes with random weights say so: their speed is the real model's, their text is noise.
MODELS = {"smollm2": "SmolLM2-135M", "8b": "Llama 3.1 8B's shape, random weights",
          "70b": "Llama 3.1 70B's shape, bf16, random weights", "70b-fp8": "Llama 3.1 70B's shape, fp8, random weights"}


def table(result: dict) -> str:
    """Markdown: each Ray config's output throughput as a share of vLLM's, and the median TTFTs."""
    by = {(r["model"], r["config"], r["concurrency"]): r for r in result["runs"]}
    configs = [c for c in dict.fromkeys(r["config"] for r in result["runs"]) if c != "vllm"]
    head = ["model", "concurrency", "vLLM tok/s"] + [f"{c} / vLLM" for c in configs]
    head += ["TTFT ms: vLLM"] + [c for c in configs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, config, c), base in by.items():
        if config != "vllm":
            continue
        ratios = [f"{by[model, k, c]['output_throughput'] / base['output_throughput']:.2f}"
                  if (model, k, c) in by else "not run" for k in configs]
        ttfts = [f"{by[model, k, c]['median_ttft_ms']:.1f}" if (model, k, c) in by else "not run" for k in configs]
        row = [model, str(c), f"{base['output_throughput']:.0f}", *ratios, f"{base['median_ttft_ms']:.1f}", *ttfts]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


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


if __name__ == "__main__":  # python benchmarks/bench_plot.py RESULTS.json: redraw its PNG beside it
    src = Path(sys.argv[1])
    plot(json.loads(src.read_text()), src.with_suffix(".png"))
