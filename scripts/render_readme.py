"""Regenerate README.md from notebook.ipynb with nbconvert; --check only reports a difference.

Shell cells become ```bash blocks without the %%bash line, and the %%writefile cell becomes the
file's own listing, so a reader can paste what the README shows straight into a terminal or
an editor. Outputs are never rendered: the README shows commands, not one machine's results.
"""

import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter
from nbconvert.preprocessors import Preprocessor

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebook.ipynb"
README = ROOT / "README.md"
BANNER = (
    "<!-- Generated from notebook.ipynb by scripts/render_readme.py; do not edit by hand.\n"
    "     Edit the notebook, then run: .venv/bin/python scripts/render_readme.py -->\n\n"
)


class MagicCells(Preprocessor):
    """Render %%bash and %%writefile cells as plain code blocks in their own language."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code":
            first, _, body = cell.source.partition("\n")
            lang = {"%%bash": "bash", "%%writefile": "python"}.get(first.split(" ")[0])
            if lang:
                cell = nbformat.v4.new_markdown_cell(f"```{lang}\n{body}\n```")
        return cell, resources


def render() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    exporter = MarkdownExporter(exclude_output=True)
    exporter.register_preprocessor(MagicCells(), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    return BANNER + body.strip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if README.read_text() != text:
            print("README.md is out of date: run .venv/bin/python scripts/render_readme.py")
            return 1
        print("README.md matches notebook.ipynb")
        return 0
    README.write_text(text)
    print(f"wrote {README.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
