"""Point the 70B config at the runner's GPU: rewrite the one `accelerator_type=` line that the
notebook's "Change the model or the GPU" names, in serve_llama_3_1_70b.py and in the notebook cell
that writes it, so the two still agree. Nothing else changes.

  python3 ci/set_accelerator.py H100
"""

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_FILE = ROOT / "serve_llama_3_1_70b.py"
NOTEBOOK = ROOT / "notebook.ipynb"
# Ray's names for NVIDIA GPUs (tutorial/gpus.py): H100, L40S, A100-40G. The name comes from a
# workflow input, so nothing else (quotes, spaces, new lines) may reach the file.
NAME = re.compile(r"[A-Z]+[0-9]+[A-Z]?(-[0-9]+G)?")
LINE = re.compile(r'^(\s*accelerator_type=)"[^"\n]*"(,)$', re.M)


def rewrite(source: str, name: str) -> str:
    new, count = LINE.subn(lambda m: f'{m.group(1)}"{name}"{m.group(2)}', source)
    if count != 1:
        raise SystemExit(f"set_accelerator: expected one accelerator_type line, found {count}")
    return new


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not NAME.fullmatch(argv[0]):
        print(f"set_accelerator: give one GPU type as Ray names it (H100, A100-40G), not {argv!r}", file=sys.stderr)
        return 2
    name = argv[0]
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c for c in nb.cells if c.source.startswith(f"%%writefile {DEPLOY_FILE.name}")]
    if len(cells) != 1:
        raise SystemExit(f"set_accelerator: expected one cell that writes {DEPLOY_FILE.name}, found {len(cells)}")
    cells[0].source = rewrite(cells[0].source, name)
    DEPLOY_FILE.write_text(rewrite(DEPLOY_FILE.read_text(), name))
    nbformat.write(nb, NOTEBOOK)
    print(f"set_accelerator: accelerator_type={name!r} in {DEPLOY_FILE.name} and the notebook's cell")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
