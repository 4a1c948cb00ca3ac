"""scripts/run_notebook.py, which README command 1 uses: every cell it runs is named with its time,
a failing cell stops the run with exit code 1, and the executed copy is written either way."""

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path: Path, *cells) -> tuple[subprocess.CompletedProcess, Path]:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    done = subprocess.run([sys.executable, str(ROOT / "scripts/run_notebook.py"), str(src), str(out), "--timeout", "60"],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    return done, out


def test_names_each_cell_and_its_time(tmp_path):
    skipped = new_code_cell("raise SystemExit('skipped cells never run')", metadata={"tags": ["skip-execution"]})
    done, out = run(tmp_path, new_markdown_cell("# prose"), new_code_cell("print('hi')"), skipped,
                    new_code_cell("%%bash\nset -euo pipefail\necho two"))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[ 1/2] print('hi')" and lines[2] == "[ 2/2] echo two", lines
    assert lines[1].strip().startswith("done in ") and lines[3].strip().startswith("done in ")
    assert "run_notebook: 2 cells in" in lines[-1]
    assert nbformat.read(out, as_version=4).cells[3].outputs[0]["text"] == "two\n"


def test_a_failing_cell_stops_the_run_and_the_copy_shows_why(tmp_path):
    done, out = run(tmp_path, new_code_cell("1 / 0"), new_code_cell("print('never')"))
    assert done.returncode == 1
    assert "[ 1/2] 1 / 0" in done.stdout and "FAILED in" in done.stdout and "ZeroDivisionError" in done.stdout
    assert "[ 2/2]" not in done.stdout
    cells = nbformat.read(out, as_version=4).cells
    assert cells[0].outputs[0]["ename"] == "ZeroDivisionError" and cells[1].outputs == []


def test_a_failing_cell_shows_what_it_printed(tmp_path):
    done, _ = run(tmp_path, new_code_cell("%%bash\necho 'FAIL port 8000: held by someone else'\nexit 1"))
    assert done.returncode == 1
    assert "FAIL port 8000: held by someone else" in done.stdout.split("FAILED in", 1)[1], done.stdout
