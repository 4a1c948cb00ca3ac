"""After the notebook runs under nbmake, tear down whatever it started and prove it.

nbmake stops at the first failing cell, so the notebook's own Shut down cell may never run.
This teardown runs after the notebook whether it passed or failed, and fails the test if
port 8000 still listens or a Ray or vLLM process remains.
"""

import subprocess
import sys

import pytest


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    if not str(item.path).endswith(".ipynb"):
        return
    out = subprocess.run(
        [sys.executable, "-m", "tutorial.teardown"], capture_output=True, text=True, timeout=600, cwd=item.path.parent
    )
    print(out.stdout + out.stderr)
    assert out.returncode == 0, f"left running after the notebook:\n{out.stdout}"
