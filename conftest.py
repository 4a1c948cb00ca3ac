"""Two checks around the tests: nothing of Ray is left behind, and the notebook is torn down.

Every test file must leave no Ray, vLLM or HAProxy process that was not running before its first
test (its module-scoped deployment included): the file's last test fails, naming the processes,
which are then stopped so that no later test is blamed. After the notebook runs under nbmake,
whose first failing cell stops it before its own Shut down cell, teardown runs, pass or fail, and
fails the test if port 8000 still listens or a process of ours remains.
"""

import subprocess
import sys
import time

import pytest

from tutorial import teardown

BEFORE: dict = {}  # test file -> pids of Ray processes running before its first test
EXIT_S = 30  # time for processes that are already shutting down to exit


def pytest_runtest_setup(item):
    BEFORE.setdefault(item.path, {p.pid for p in teardown.ray_processes()})


def _left_since(pids: set[int]) -> list:
    deadline = time.monotonic() + EXIT_S
    while (left := [p for p in teardown.ray_processes() if p.pid not in pids]) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def _notebook_teardown(item) -> str:
    out = subprocess.run([sys.executable, "-m", "tutorial.teardown"], capture_output=True, text=True, timeout=600,
                         cwd=item.path.parent)
    print(out.stdout + out.stderr)
    return "" if out.returncode == 0 else f"left running after the notebook:\n{out.stdout}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        problems = [_notebook_teardown(item)] if item.path.suffix == ".ipynb" else []
        if nextitem is None or nextitem.path != item.path:
            if left := _left_since(BEFORE.pop(item.path)):
                problems.append(f"{item.path.name} left Ray running: " + "; ".join(teardown.describe(p) for p in left))
                teardown.stop(left)
        if problems := [p for p in problems if p]:
            pytest.fail("\n".join(problems), pytrace=False)
