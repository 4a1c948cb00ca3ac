"""Plot an autoscaling results file: replicas and output tokens per second over time, load marked.

  python benchmarks/autoscaling_plot.py docs/results/autoscaling-cpu.json   (writes the .png beside it)
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINDOW_S = 10  # output tokens per second, averaged over this many seconds of the timeline


def tokens_per_s(t: list[float], tokens: list[int]) -> list[float]:
    """Output tokens per second over the last WINDOW_S seconds at each timeline point."""
    rates = []
    for i, now in enumerate(t):
        j = max((k for k in range(i) if t[k] <= now - WINDOW_S), default=0)
        rates.append((tokens[i] - tokens[j]) / (now - t[j]) if now > t[j] else 0.0)
    return rates


def plot(result: dict, out: Path) -> None:
    points = [point for point in result["timeline"] if point[1] >= 0]
    t, replicas = [p[0] for p in points], [p[1] for p in points]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.step(t, replicas, where="post", color="tab:blue", linewidth=2, label="engine replicas running")
    ax.set_ylim(0, result["max_replicas"] + 0.5)
    ax.set_yticks(range(result["max_replicas"] + 1))
    ax.set_xlabel("seconds")
    ax.set_ylabel("replicas")
    right = ax.twinx()
    right.plot(t, tokens_per_s(t, [p[4] for p in points]), color="tab:orange", alpha=0.8,
               label=f"output tokens/s ({WINDOW_S} s average)")
    right.set_ylabel("output tokens per second")
    for x, label in ((result["load_start_s"], "load starts"), (result["load_stop_s"], "load drops to 1 client")):
        ax.axvline(x, color="grey", linestyle="--")
        ax.annotate(label, (x, result["max_replicas"] + 0.25), xytext=(4, 0), textcoords="offset points", fontsize=8)
    ax.set_title(f"{result['model']} on {result['device']}: scale-up {result['scale_up_s']:.0f} s, "
                 f"scale-down {result['scale_down_s']:.0f} s, {result['load']['requests']} requests, "
                 f"{result['load']['failed'] + result['load']['broken_streams']} lost", fontsize=9)
    lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})  # no version stamp: regenerates byte for byte
    plt.close(fig)


if __name__ == "__main__":
    path = Path(sys.argv[1])
    plot(json.loads(path.read_text()), path.with_suffix(".png"))
