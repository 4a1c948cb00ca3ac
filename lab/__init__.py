"""The experiments behind docs/: each runs (`python -m lab run NAME`), writes a results file stamped
with device, versions and date, draws its plot, and feeds a page that `python -m lab render` writes.
The lab imports the tutorial; the tutorial never imports the lab."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"

# name: (module in lab/, what it measures)
EXPERIMENTS = {
    "notebook": ("notebook_run", "the notebook end to end under nbmake on this node, summarised"),
    "cold-start": ("cold_start", "where the time from `serve run` to ready goes, from executed notebooks"),
    "bench": ("bench", "Ray Serve LLM as the tutorial deploys it against plain vLLM, 1 to 256 clients"),
    "capacity": ("capacity_validation", "the planner's KV cache tokens against vLLM's own count"),
    "graph-capture": ("graph_capture", "whether vLLM captures CUDA graphs at tensor parallelism here"),
    "autoscaling": ("autoscaling", "one replica to two under streaming load and back, no request lost"),
    "scale-to-zero": ("scale_to_zero", "no replica while idle; a burst after idle brings one back, every request answered"),
    "reliability": ("reliability", "bad input, faults, leaks and abuse against one deployment"),
    "multinode": ("multinode", "the 70B's shape over two Ray nodes, against one node"),
}
