"""Execute a notebook top to bottom as a reader would, saying which cell runs and how long it took.

  python scripts/run_notebook.py notebook.ipynb notebook.executed.ipynb --timeout 900

The executed copy is written also when a cell fails, so its outputs show what went wrong; the
exit code is 1 then. Cells tagged skip-execution are skipped, as nbmake and nbconvert do.
"""

import argparse
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

SKIP_TAG = "skip-execution"


def label(source: str) -> str:
    """A cell's first line of substance: not %%bash, not the shell's strict-mode line."""
    lines = [line.strip() for line in source.splitlines()]
    lines = [line for line in lines if line and line not in ("%%bash", "set -euo pipefail")]
    return (lines[0] if lines else "(empty)")[:72]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook")
    parser.add_argument("out")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one cell may run")
    args = parser.parse_args(argv)

    nb = nbformat.read(args.notebook, as_version=4)
    runs = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()
            and SKIP_TAG not in c.metadata.get("tags", [])]
    started = {}

    def on_cell_execute(cell, cell_index):
        started["t"] = time.monotonic()
        print(f"[{runs.index(cell) + 1:2}/{len(runs)}] {label(cell.source)}", flush=True)

    def on_cell_executed(cell, cell_index, execute_reply):
        ok = execute_reply["content"]["status"] == "ok"
        print(f"        {'done' if ok else 'FAILED'} in {time.monotonic() - started['t']:.0f} s", flush=True)
        if not ok:  # what the cell printed says why; the error below only says that it failed
            printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
            print("\n".join(printed.splitlines()[-40:]), flush=True)

    client = NotebookClient(nb, timeout=args.timeout, skip_cells_with_tag=SKIP_TAG,
                            resources={"metadata": {"path": "."}},
                            on_cell_execute=on_cell_execute, on_cell_executed=on_cell_executed)
    start = time.monotonic()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        print(f"run_notebook: stopped after {time.monotonic() - start:.0f} s: {str(e)[-2000:]}", flush=True)
        return 1
    finally:
        nbformat.write(nb, args.out)
    print(f"run_notebook: {len(runs)} cells in {time.monotonic() - start:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
