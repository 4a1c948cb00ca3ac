"""Plot an autoscaling results file: replicas and requests in flight over time, load marked.

  python ci/autoscaling_plot.py ci/results/autoscaling-cpu.json   (writes the .png beside it)
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot(result: dict, out: Path) -> None:
    t, replicas, running = zip(*[point[:3] for point in result["timeline"] if point[1] >= 0])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.step(t, replicas, where="post", color="tab:blue", linewidth=2, label="engine replicas running")
    ax.set_ylim(0, result["max_replicas"] + 0.5)
    ax.set_yticks(range(result["max_replicas"] + 1))
    ax.set_xlabel("seconds")
    ax.set_ylabel("replicas")
    right = ax.twinx()
    right.plot(t, running, color="tab:orange", alpha=0.7, label="requests in flight")
    right.set_ylabel("requests in flight")
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
