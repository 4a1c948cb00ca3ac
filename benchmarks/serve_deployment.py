"""A Ray cluster with one Serve application on it, as a context manager, for scripts and tests.

The same steps the notebook runs (token, the high-throughput mode with HAProxy's files in a private
folder, `ray start --head`, `serve
start` on loopback, `serve run --non-blocking`, wait until it answers), each under a deadline,
with every command's output in one log. Entering
refuses to start beside a running deployment; leaving, or failing to start, stops the cluster it
started (and nothing else) and raises if anything of it is left.
"""

import os
import subprocess
import time
from pathlib import Path

from tutorial import haproxy_files, teardown
from tutorial.facts import HIGH_THROUGHPUT_ENV, HTTP_HOST, METRICS_PORT, MIN_CPUS
from tutorial.ready import wait_until_ready


def occupied() -> list[str]:
    """What keeps a deployment from starting here: processes of the tutorial's own cluster, or
    whoever holds port 8000."""
    return teardown.leftovers() or (teardown.foreign() if teardown.port_open() else [])


class DeploymentError(RuntimeError):
    pass


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else ["(no log)"]
    return "\n".join(text[-lines:])


class ServeDeployment:
    port = teardown.PORT

    def __init__(self, target: str, app_dir: Path, env: dict, log: Path, ready_s: float, num_cpus: int = MIN_CPUS):
        """`target` is serve run's MODULE:APP in `app_dir`; `env` adds to this environment and
        the notebook's (or overrides it); the head declares at least `num_cpus` logical CPUs
        (scheduling slots, not cores)."""
        self.target, self.app_dir, self.log, self.ready_s = target, app_dir, log, ready_s
        self.num_cpus = num_cpus
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", **HIGH_THROUGHPUT_ENV, **haproxy_files.private_env(), **env}

    def run(self, cmd: list[str], timeout: float) -> None:
        print("$", " ".join(cmd), flush=True)
        with self.log.open("a") as log:
            try:
                rc = subprocess.run(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        if rc != 0:
            raise DeploymentError(f"{' '.join(cmd[:3])} failed ({rc}):\n{tail(self.log)}")

    def __enter__(self):
        if running := occupied():
            raise DeploymentError(f"something already runs here: {running}")
        start = time.monotonic()
        cpus = str(max(os.cpu_count() or 1, self.num_cpus))  # the engine and the ingress each need a logical CPU
        try:
            self.run(["ray", "get-auth-token", "--generate"], 120)
            # In a session of its own, as the notebook starts it, so teardown stops this cluster only.
            self.run(["setsid", "--wait", "ray", "start", "--head", "--num-cpus", cpus, "--metrics-export-port",
                      str(METRICS_PORT), "--disable-usage-stats"], 300)
            teardown.remember()
            self.run(["serve", "start", "--http-host", HTTP_HOST], 300)
            # Returns once the application is ready (Ray 2.58-2.60), so it gets the whole deadline.
            self.run(["serve", "run", "--app-dir", str(self.app_dir), self.target, "--non-blocking"], self.ready_s)
            wait_until_ready(timeout_s=max(self.ready_s - (time.monotonic() - start), 60), poll_s=2)
        except RuntimeError as e:
            self.__exit__()
            raise DeploymentError(f"{self.target} not ready: {e}") from e
        except BaseException:
            self.__exit__()
            raise
        self.ready_after_s = time.monotonic() - start
        return self

    def __exit__(self, *exc):
        teardown.shutdown()
        if left := occupied():
            raise DeploymentError(f"teardown left {left}")
