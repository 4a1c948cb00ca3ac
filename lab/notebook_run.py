"""The notebook end to end under nbmake on this node, summarised as a results file.

  python -m lab run notebook --record                   LLM_PROFILE (default gpu) on this node's GPUs
  python -m lab run notebook --smoke                    the small model on the CPU: the same run
  LLM_PROFILE=rehearsal python -m lab run notebook --record --name tp4-h200x4

Writes NAME.json (default gpu-notebook-<gpu>, or cpu-notebook on the CPU), the executed notebook
NAME.ipynb and the whole `serve run` output NAME.serve-run.log. The run's copy of the notebook sits
beside the original while it runs, so its cells run in the repository root.
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from lab import ROOT
from lab.notebook_results import summarise_run
from tutorial import gpus
from tutorial.facts import READY_TIMEOUT_S

ANSWER = Path("/tmp/chat_answer.json")  # where the notebook's curl cell leaves its answer


def main(argv: list[str], results: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="LLM_PROFILE=cpu: the small model on the CPU")
    p.add_argument("--name", help="results name (default gpu-notebook-<gpu>, or cpu-notebook)")
    args = p.parse_args(argv)
    profile = "cpu" if args.smoke else os.environ.get("LLM_PROFILE", "gpu")
    name = args.name or ("cpu-notebook" if profile.startswith("cpu") else f"gpu-notebook-{(gpus.node_type() or 'gpu').lower()}")
    ready_s = int(os.environ.get("READY_TIMEOUT_S", READY_TIMEOUT_S))
    env = {**os.environ, "LLM_PROFILE": profile, "READY_TIMEOUT_S": str(ready_s)}
    subprocess.run([sys.executable, "-m", "tutorial.small_model"], cwd=ROOT, check=True)
    run = ROOT / "notebook.lab-run.ipynb"
    shutil.copy(ROOT / "notebook.ipynb", run)
    ANSWER.unlink(missing_ok=True)
    start = time.monotonic()
    rc = subprocess.run([sys.executable, "-m", "pytest", str(run), "--nbmake", "--overwrite",
                         f"--nbmake-timeout={ready_s + 300}", "-p", "no:cacheprovider", "-v"], cwd=ROOT, env=env).returncode
    print(f"notebook: pytest exited {rc} after {time.monotonic() - start:.0f} s", flush=True)
    # Ray and vLLM stamp their log lines in local time; the reader of this notebook needs the zone.
    nb = nbformat.read(run, as_version=4)
    nb.metadata["lab"] = {"log_utc_offset_s": int(datetime.datetime.now().astimezone().utcoffset().total_seconds())}
    nbformat.write(nb, run)
    results.mkdir(parents=True, exist_ok=True)
    summarise_run(run, rc, ANSWER, results / f"{name}.json", profile)
    shutil.move(run, results / f"{name}.ipynb")
    print(f"notebook: wrote {results / name}.json, .ipynb and .serve-run.log")
    return rc
