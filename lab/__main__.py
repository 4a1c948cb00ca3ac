"""The lab's one entry point: list the experiments, run one, render the pages.

  python -m lab list
  python -m lab run NAME [--smoke] [--record | --results DIR] [OPTIONS]   OPTIONS: ... NAME --help
  python -m lab render [--check]

`run` writes its results files to a new folder of /tmp and says where; --record writes them to
docs/results/ instead, where the pages are rendered from, and --results to DIR. --smoke is the smallest run of the same
code path: the small model on the CPU, a few seconds of load.
"""

import importlib
import sys
import tempfile
from pathlib import Path

from lab import EXPERIMENTS, RESULTS


def run(name: str, argv: list[str]) -> int:
    results = RESULTS if "--record" in argv else None
    argv = [a for a in argv if a != "--record"]
    if "--results" in argv:
        i = argv.index("--results")
        results, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    results = results or Path(tempfile.mkdtemp(prefix=f"lab-{name}-"))
    results.mkdir(parents=True, exist_ok=True)
    print(f"lab: {name} writes to {results}", flush=True)
    return importlib.import_module(f"lab.{EXPERIMENTS[name][0]}").main(argv, results)


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        width = max(map(len, EXPERIMENTS))
        for name, (_, what) in EXPERIMENTS.items():
            print(f"{name:<{width}}  {what}")
        return 0
    if argv[:1] == ["run"] and len(argv) > 1 and argv[1] in EXPERIMENTS:
        return run(argv[1], argv[2:])
    if argv[:1] == ["render"]:
        from lab import render
        return render.main(argv[1:])
    print(__doc__, "experiments:", ", ".join(EXPERIMENTS), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
