"""Two checks around the tests: nothing of Ray is left behind, and the notebook is torn down.

Every process a test starts inherits a mark of this test run in its environment (Ray's daemons,
workers, engines and HAProxy included), so a program running beside the tests is never taken for
ours; a process that hides its environment is ours when it shares a marked process's session. After each test file, its module-scoped deployment included, no marked Ray, vLLM or HAProxy
process may remain: the file's last test fails, naming them, and they are stopped, so that no later
test is blamed. After the notebook runs under nbmake, whose first failing cell stops it before its
own Shut down cell, teardown runs, pass or fail, and fails the test if port 8000 still listens or a
process of ours remains.

In CI (CI=true) a skipped test fails, unless its reason starts with MACHINE: a limit of the machine, such as
no non-loopback address, which the log then names in one line.
"""

import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from tutorial import teardown

RUN_MARK = "TUTORIAL_TEST_RUN"
os.environ[RUN_MARK] = uuid.uuid4().hex  # before any test module copies the environment
EXIT_S = 30  # time for processes that are already shutting down to exit
MACHINE = "this machine cannot"  # how a skip reason starts when the machine, not the code, is why


def _ours() -> list[psutil.Process]:
    """Marked Ray processes, and every process in their sessions but this one's."""
    found = teardown.marked(RUN_MARK, os.environ[RUN_MARK])
    pids = {p.pid for p in found}
    return [*found, *(p for p in teardown.in_sessions(set(found.values()) - {os.getsid(0)}) if p.pid not in pids)]


def _left() -> list[psutil.Process]:
    deadline = time.monotonic() + EXIT_S
    while (left := _ours()) and time.monotonic() < deadline:
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
            if left := _left():
                problems.append(f"{item.path.name} left Ray running: " + "; ".join(teardown.describe(p) for p in left))
                for _ in range(3):  # a raylet on its way out can still start its agents
                    teardown.stop(left)
                    if not (left := _ours()):
                        break
        if problems := [p for p in problems if p]:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(MACHINE):
            print(f"\nskipped in CI, {reason}: {item.nodeid}")
        else:
            report.outcome, report.longrepr = "failed", f"skipped in CI, where a skip is a failure: {reason}"
    return report
