"""The notebook's launch recipe, the one copy outside it: every experiment starts and stops its
deployment here, on one node or several.

The steps are the launch cells' commands (tests/test_launch.py holds them equal): the cluster token,
the cluster environment (serve_plugins/cluster_env.py), `ray start
--head` in a session of its own, written down for teardown, `serve start` on loopback, `serve run
--non-blocking`, then the readiness check. Extra Ray nodes join the head on the same host, each with
its own GPUs, temp dir and ports, as a second host would. Each command runs under a deadline with
its output in one log. Entering refuses to start beside a running deployment; leaving, or failing to
start, stops the cluster it started (and nothing else) and raises if anything of it is left.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from serve_plugins import cluster_env
from tutorial import teardown
from tutorial.facts import HTTP_HOST, METRICS_PORT, MIN_CPUS, RAY_PORT
from tutorial.ready import wait_until_ready

ROOT = Path(__file__).resolve().parent.parent

@dataclasses.dataclass
class Node:
    """A Ray node that joins the head on this host: its GPUs (CUDA_VISIBLE_DEVICES), logical CPUs,
    custom resources (a GPU type, as Ray's `accelerator_type:H100`), and what two nodes on one host
    must not share (temp dir, node manager and agent ports)."""
    gpus: str
    num_cpus: int
    resources: dict = dataclasses.field(default_factory=dict)
    temp_dir: str = "/tmp/ray-worker-node"
    node_manager_port: int = 6380
    agent_port: int = 52366


def occupied() -> list[str]:
    """What keeps a deployment from starting here: processes of the tutorial's own cluster, or
    whoever holds port 8000."""
    return teardown.leftovers() or (teardown.foreign() if teardown.port_open() else [])


class DeploymentError(RuntimeError):
    pass


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else ["(no log)"]
    return "\n".join(text[-lines:])


def _gpus(devices: str) -> list[str]:
    return ["--num-gpus", str(len(devices.split(",")) if devices else 0)]


def steps(num_cpus: int, target: str, head_gpus: str | None = None, workers: tuple[Node, ...] = (),
          preflight: bool = False) -> list[tuple[list[str], dict]]:
    """(argv, extra environment) of each launch command, in order, run from the repository root;
    with `preflight`, the tutorial's preflight runs once every node has joined."""
    on_head = {} if head_gpus is None else {"CUDA_VISIBLE_DEVICES": head_gpus}
    gpus = [] if head_gpus is None else _gpus(head_gpus)
    commands = [
        (["ray", "get-auth-token", "--generate"], {}),
        (["setsid", "--wait", "ray", "start", "--head", "--num-cpus", str(num_cpus), *gpus,
          "--metrics-export-port", str(METRICS_PORT)], on_head),
        ([sys.executable, "-m", "tutorial.teardown", "--remember"], {}),
    ]
    for node in workers:
        commands += [
            (["setsid", "--wait", "ray", "start", "--address", f"127.0.0.1:{RAY_PORT}", "--num-cpus", str(node.num_cpus),
              *_gpus(node.gpus), *(["--resources", json.dumps(node.resources)] if node.resources else []),
              "--temp-dir", node.temp_dir,
              "--dashboard-agent-listen-port", str(node.agent_port), "--node-manager-port", str(node.node_manager_port)],
             {"CUDA_VISIBLE_DEVICES": node.gpus}),
            ([sys.executable, "-m", "tutorial.teardown", "--remember", str(node.node_manager_port)], {}),
        ]
    file = target.endswith(".yaml")
    if preflight:
        commands.append(([sys.executable, "-m", "tutorial.preflight", *(["--serve-config", target] if file else [])], {}))
    # One HTTP proxy when several nodes share a host: each would bind port 8000.
    proxy = ["--proxy-location", "HeadOnly"] if workers else []
    commands += [
        (["serve", "start", "--http-host", HTTP_HOST, *proxy], {}),
        # A Serve config file (serve_config.yaml's way) is deployed, returning at once; MODULE:APP is run.
        (["serve", "deploy", target] if file else ["serve", "run", target, "--non-blocking"], {}),
    ]
    return commands


class Deployment:
    port = teardown.PORT

    def __init__(self, target: str, env: dict, log: Path, ready_s: float, num_cpus: int = MIN_CPUS,
                 head_gpus: str | None = None, workers: tuple[Node, ...] = (), preflight: bool = False,
                 head_cpus: int | None = None):
        """`target` is serve run's MODULE:APP in the repository, or a Serve config file; `env` adds to this environment and
        the notebook's (or overrides it); the head declares at least `num_cpus` logical CPUs
        (scheduling slots, not cores), or exactly `head_cpus` (0: a head that runs no work, as on
        Kubernetes), and, given `head_gpus`, only those GPUs."""
        self.log, self.ready_s, self.target = log, ready_s, target
        # The engine and the ingress each need a logical CPU.
        cpus = max(os.cpu_count() or 1, num_cpus) if head_cpus is None else head_cpus
        self.steps = steps(cpus, target, head_gpus, workers, preflight)
        # Other nodes join only a head that listens beyond loopback, as the notebook's multi-node section says.
        cluster = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"} if workers else {}
        self.env = {**os.environ, **cluster_env.for_this_machine(), "RAY_USAGE_STATS_ENABLED": "0", **cluster, **env}

    def run(self, cmd: list[str], timeout: float, extra: dict | None = None) -> None:
        print("$", " ".join(cmd), flush=True)
        # `ray get-auth-token` prints the cluster's token: as in the notebook, it goes nowhere, never into the log.
        secret = cmd[:2] == ["ray", "get-auth-token"]
        with self.log.open("a") as log:
            try:
                rc = subprocess.run(cmd, env={**self.env, **(extra or {})}, stdout=subprocess.DEVNULL if secret else log,
                                    stderr=log, timeout=timeout, cwd=ROOT).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        if rc != 0:
            raise DeploymentError(f"{' '.join(cmd[:3])} failed ({rc}):\n{tail(self.log)}")

    def __enter__(self):
        if running := occupied():
            raise DeploymentError(f"something already runs here: {running}")
        start = time.monotonic()
        # As in the notebook's kernel: this process asks the cluster too (state API, dashboard), and Ray
        # reads the mode once, when it is first imported.
        os.environ["RAY_AUTH_MODE"] = "token"
        try:
            for cmd, extra in self.steps[:-1]:
                self.run(cmd, 300, extra)
            # serve run returns once the application is ready (Ray 2.58-2.60), so it gets the whole deadline.
            self.run(self.steps[-1][0], self.ready_s)
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
