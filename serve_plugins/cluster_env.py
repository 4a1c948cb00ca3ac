"""The environment of `ray start`: one set of variables for every target that runs the tutorial.

Ray reads these when its processes start, so they belong in the environment of `ray start` on every
node; a Serve config file cannot set them. The notebook applies `for_this_machine()` before its
`ray start`; `python -m serve_plugins.cluster_env` prints the same as shell exports, for a cluster
you start by hand before `serve deploy serve_config.yaml`. scripts/render_k8s.py writes SHARED into
every KubeRay pod and service.yaml's env_vars holds it for Anyscale (tests hold all four equal).
"""

import os
import shlex
import sys
import uuid
from pathlib import Path

from serve_plugins import haproxy_files

# Ray Serve LLM's high-throughput mode: HAProxy on port 8000 instead of Serve's Python proxy, gRPC
# between replicas, and the engine's replica answering HTTP itself (docs/benchmark.md measures it
# against plain vLLM and against Serve's default mode).
HIGH_THROUGHPUT = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1",
    # HAProxy's default of 20,000 connections asks for 50,000 open files, more than many machines allow.
    "RAY_SERVE_HAPROXY_MAXCONN": "4096",
}

# HAProxy reloads at every change of replicas, and kills its old process, with every stream that
# process still carries, this long after a reload (Ray's default: 120 s; ray-project/ray#66056).
# The longest answer the 70B config admits is max_model_len tokens; at SLOWEST_TOKENS_PER_S, a rate
# below the ~15 tokens/s a stream got from an overloaded 70B-shaped replica (docs/scaling.md), it
# lasts 32768 / 10 = 55 minutes. The cost: after each reload, the old HAProxy process and its idle
# connections linger up to this long, and Ray keeps a stopped replica's ports out of use for this long
# plus 30 s (RAY_SERVE_PORT_QUARANTINE_S follows this setting).
SLOWEST_TOKENS_PER_S = 10
HARD_STOP_AFTER_S = 3600

# What every target sets: the callback that every Serve HTTP server loads (the API key check when
# SERVE_API_KEY is set, a clear 400 for vLLM's silent 500s), the high-throughput mode, no stream cut.
SHARED = {
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_plugins.proxy:middlewares",
    **HIGH_THROUGHPUT,
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(HARD_STOP_AFTER_S),
}

# Every process that `ray start` starts inherits this mark of the notebook's kernel, so Shut down finds
# the cluster even when the launch cell was interrupted before it wrote the cluster's session down.
LAUNCH_MARK = "TUTORIAL_LAUNCH_MARK"

# The folder that holds this package: what a node's PYTHONPATH must name.
HOME = str(Path(__file__).resolve().parent.parent)


def for_this_machine(environ=os.environ) -> dict[str, str]:
    """SHARED, plus what a cluster you start yourself on this machine needs (KubeRay and Anyscale set
    their own): Ray's token auth for every `ray` and `serve` command; every Ray port on loopback
    (Ray's single-machine mode) unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 was exported for a head
    that other nodes join; HAProxy's files in a folder only this account can enter, and HAProxy
    started through haproxy_guard.py; this package on PYTHONPATH; the launch's mark, kept on a rerun."""
    path = environ.get("PYTHONPATH", "")
    return {
        **SHARED,
        "RAY_AUTH_MODE": "token",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
        **haproxy_files.private_env(),
        "PYTHONPATH": path if HOME in path.split(os.pathsep) else os.pathsep.join(p for p in (HOME, path) if p),
        LAUNCH_MARK: environ.get(LAUNCH_MARK) or uuid.uuid4().hex,
    }


if __name__ == "__main__":
    # eval "$(python -m serve_plugins.cluster_env)" in the shell that runs `ray start`. Without the
    # launch mark: a cluster started by hand is the reader's, which the notebook's Shut down leaves alone.
    exports = {k: v for k, v in for_this_machine().items() if k != LAUNCH_MARK}
    sys.stdout.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items()))
