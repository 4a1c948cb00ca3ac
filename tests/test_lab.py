"""The lab's shape: one entry point lists and runs every experiment, each with a smoke mode; the
tutorial imports nothing of the lab, serve_plugins nothing of the rest, and no folder imports one that imports it back. Nothing is started."""

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from lab import EXPERIMENTS

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("serve_plugins", "tutorial", "lab", "scripts", "ci", "tests")


def imported_folders(folder: str) -> set[str]:
    """The project folders that the Python files of `folder` import."""
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            found |= {n.split(".")[0] for n in names} & set(FOLDERS)
    return found - {folder}


def test_the_entry_point_lists_every_experiment():
    out = subprocess.run([sys.executable, "-m", "lab", "list"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and [line.split()[0] for line in out.stdout.splitlines()] == list(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_one_way_and_has_a_smoke_mode(name):
    module = importlib.import_module(f"lab.{EXPERIMENTS[name][0]}")
    assert list(inspect.signature(module.main).parameters) == ["argv", "results"]
    out = subprocess.run([sys.executable, "-m", "lab", "run", name, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--smoke" in out.stdout, out.stdout + out.stderr


def test_the_tutorial_imports_nothing_of_the_lab_and_no_folder_imports_back():
    graph = {folder: imported_folders(folder) for folder in FOLDERS}
    # What Ray loads imports nothing of the rest; the tutorial's helpers import only that.
    assert graph["serve_plugins"] == set() and graph["tutorial"] == {"serve_plugins"}, graph
    cycles = [(a, b) for a in FOLDERS for b in graph[a] if a in graph.get(b, set())]
    assert cycles == [], graph


def test_an_unknown_experiment_is_named_with_the_choices():
    out = subprocess.run([sys.executable, "-m", "lab", "run", "benchmark"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "bench" in out.stderr
