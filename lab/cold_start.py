"""Where the time from `serve run` to ready goes, read from executed notebooks, and its plot.

The `serve run` cell streams Ray's and vLLM's log lines with their timestamps; the first line of
each start-up step marks where the step ends. The phases are the gaps between those marks, from
the start of the `serve run` cell to the end of the readiness check.

  python -m lab run cold-start --out docs/results/cold-start-h100.json \\
      before=OLD_EXECUTED.ipynb after=NEW_EXECUTED.ipynb        (writes the .png beside it)
  python -m lab run cold-start --merge --out docs/results/cold-start-h100.json later=EXECUTED.ipynb
      [--imports IMPORTS.log]   (lines "import MODULE: SECONDS s", each import timed in a fresh python)
"""

import argparse
import datetime
import json
import re
import textwrap
from pathlib import Path

import nbformat

from lab import RESULTS
from lab.notebook_results import launch_window, notebook_sha256, stream_text, time_to_ready

# (phase, the log line that ends it), in start-up order; each must be found, in this order, or the
# reading stops with the mark's name. A tuple is patterns in order of preference: vLLM's GPU workers
# print "Model loading took" just after "Loading weights took", its CPU worker only the latter.
WEIGHTS_LOADED = (r"Model loading took", r"Loading weights took")
MARKS = (
    ("serve run imports the app", r"Deployment Options"),
    ("replica starts, imports vLLM, engine process", r"Initializing a V1 LLM engine"),
    ("workers start, weights load", WEIGHTS_LOADED),
    ("profile, KV cache, compile, CUDA graphs", r"init engine \(profile, create kv cache, warmup model\) took"),
    ("Serve marks the app ready", r"Application '[^']*' is ready"),
)
# Every phase name in start-up order, with those of runs recorded before Serve had a cell of its
# own and while Ray still logged the engine's hand-over ("Started vLLM engine").
PHASES = ("serve run imports the app and starts Serve", "Serve starts (in the same cell as `serve run`)",
          "serve run imports the app", "replica starts, imports vLLM, engine process", "workers start, weights load",
          "profile, KV cache, compile, CUDA graphs", "engine hands over to Serve", "Serve marks the app ready",
          "readiness check answers")
# What vLLM itself reports about its steps, in seconds.
REPORTED = {
    "weights_s": r"Loading weights took ([\d.]+) seconds",
    "model_loading_s": r"Model loading took [\d.]+ GiB (?:memory )?and ([\d.]+) seconds",
    "torch_compile_s": r"torch\.compile takes ([\d.]+) s in total",
    "cuda_graphs_s": r"Graph capturing finished in ([\d.]+) secs",
    "init_engine_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)",
}
RAY_TIME = re.compile(r"\b(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d),(\d{3})\b")
VLLM_TIME = re.compile(r"\b(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\b")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class MissingMark(RuntimeError):
    """A log line an experiment expects is not there (or out of order): its format changed upstream."""


def local_zone() -> datetime.tzinfo:
    """This process's time zone, which the Ray and vLLM processes it starts inherit (TZ included)."""
    return datetime.datetime.now().astimezone().tzinfo


def notebook_zone(nb) -> datetime.tzinfo:
    """The zone of the log stamps in an executed notebook, which `python -m lab run notebook` records."""
    offset = nb.metadata.get("lab", {}).get("log_utc_offset_s")
    if offset is None:
        raise MissingMark("the executed notebook does not record its log lines' time zone (metadata lab.log_utc_offset_s)")
    return datetime.timezone(datetime.timedelta(seconds=offset))


def line_time(line: str, near: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime | None:
    """The timestamp of a Ray ("2026-11-25 04:40:16,778") or vLLM ("11-25 04:41:54") log line, both in
    the local time of the process that wrote it (`zone`). vLLM's has no year: the one nearest `near`."""
    if m := RAY_TIME.search(line):
        y, mo, d, h, mi, s, ms = map(int, m.groups())
        return datetime.datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=zone)
    if m := VLLM_TIME.search(line):
        mo, d, h, mi, s = map(int, m.groups())
        years = []
        for y in (near.year - 1, near.year, near.year + 1):
            try:
                years.append(datetime.datetime(y, mo, d, h, mi, s, tzinfo=zone))
            except ValueError:  # 29 February of a year without it
                pass
        return min(years, key=lambda t: abs(t - near))
    return None


def first_time(lines: list[str], pattern: str, near: datetime.datetime, zone) -> datetime.datetime | None:
    """The earliest time of a line matching `pattern`."""
    return min((t for line in lines if re.search(pattern, line) and (t := line_time(line, near, zone))), default=None)


def gaps(lines: list[str], marks, start: datetime.datetime, zone: datetime.tzinfo) -> tuple[dict, datetime.datetime]:
    """{phase: seconds} from `start` to the earliest line of each of `marks` ((phase, pattern), in
    order), and the last mark's time. A mark without a line, or whose line comes before the mark
    before it, raises MissingMark with its name: never merged quietly into the next phase."""
    out, last = {}, start
    for name, patterns in marks:
        patterns = (patterns,) if isinstance(patterns, str) else patterns
        hit = next((t for p in patterns if (t := first_time(lines, p, start, zone))), None)
        if hit is None or hit < last:
            raise MissingMark(f"{name}: no log line matches /{'|'.join(patterns)}/"
                              + ("" if hit is None else " after the mark before it"))
        out[name] = round((hit - last).total_seconds(), 1)
        last = hit
    return out, last


def phases(nb) -> dict:
    """The start-up phases of one executed notebook, in seconds, and vLLM's own figures."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    launch, start, end = launch_window(code)
    lines = [ANSI.sub("", line) for line in stream_text(launch).splitlines()]
    out, last = gaps(lines, MARKS, start, notebook_zone(nb))
    out["readiness check answers"] = round((end - last).total_seconds(), 1)
    text = "\n".join(lines)
    reported = {k: float(m.group(1)) for k, p in REPORTED.items() if (m := re.search(p, text))}
    return {"total_s": time_to_ready(code), "phases_s": out, "vllm_reports": reported,
            "notebook_sha256": notebook_sha256(nb)}


def phase_names(runs: dict) -> list[str]:
    """The phases that any of `runs` has, in start-up order."""
    return sorted({p for r in runs.values() for p in r["phases_s"]}, key=PHASES.index)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    names = phase_names(runs)
    fig, ax = plt.subplots(figsize=(10, 2.6 + 0.55 * len(runs)))
    colors = plt.cm.tab10.colors
    for row, run in enumerate(runs.values()):
        left = 0.0
        for i, name in enumerate(names):
            width = run["phases_s"].get(name, 0.0)
            ax.barh(row, width, left=left, color=colors[i % len(colors)], label=name if row == 0 else None)
            left += width
        ax.text(left + 3, row, f"{run['total_s']:.0f} s", va="center")
    ax.set_yticks(range(len(runs)), [textwrap.fill(label, 32) for label in runs], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["total_s"] for r in runs.values()) * 1.12)
    ax.set_xlabel("seconds from the start of `serve run` to the first answer")
    ax.set_title(f"Start-up of the small model, {result['device']}", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.45, -0.3), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str], results: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="LABEL=EXECUTED.ipynb, with its results JSON beside it")
    p.add_argument("--out", type=Path, help="results JSON (needed but with --smoke)")
    p.add_argument("--smoke", action="store_true", help="read the committed CPU run into cold-start-smoke.json")
    p.add_argument("--merge", action="store_true", help="keep the runs already in --out, adding these after them")
    p.add_argument("--imports", type=Path, help="times of single imports in a fresh python on the same machine")
    args = p.parse_args(argv)
    if args.smoke:
        args.runs = args.runs or [f"smoke={RESULTS / 'cpu-notebook.ipynb'}"]
        args.out = args.out or results / "cold-start-smoke.json"
    if not (args.runs and args.out):
        p.error("give LABEL=EXECUTED.ipynb runs and --out")
    old = json.loads(args.out.read_text()) if args.merge and args.out.exists() else {}
    runs = old.get("runs", {})
    meta = {}
    for spec in args.runs:
        label, path = spec.split("=", 1)
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        runs[label] = dict(phases(nbformat.read(path, as_version=4)), profile=meta["profile"], date=meta["date"])
    device = f"{meta['gpu_name']} x{meta['gpu_count']}" if meta["gpu_name"] else f"CPU ({meta['cpu_cores']} cores)"
    result = {"device": device, "ray_version": meta["ray_version"],
              "vllm_version": meta["vllm_version"], "torch_version": meta["torch_version"], "runs": runs}
    if args.imports:  # the fastest of each module's tries: what one process start costs at best
        times = {}
        for m in re.finditer(r"^import (\S+): ([\d.]+) s$", args.imports.read_text(), re.M):
            times[m.group(1)] = min(times.get(m.group(1), float("inf")), float(m.group(2)))
        result["python_import_s"] = times
    elif "python_import_s" in old:
        result["python_import_s"] = old["python_import_s"]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))
    return 0

