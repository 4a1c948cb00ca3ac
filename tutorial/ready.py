"""Wait, with a deadline, until the deployment answers; on failure show why and raise.

Until the engine has loaded its weights the endpoint answers with refused connections, 404 or
503. Ray 2.58 and 2.60 already wait in `serve run --non-blocking`, but other versions return
early, and a ready application is worth one real request. This polls /v1/models, then sends a
one-token chat completion, printing progress every poll. If the Serve application fails to
deploy, or the deadline passes, it prints the tail of the replica logs and raises.
"""

import glob
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

from serve_plugins.api_key import KEY_ENV
from tutorial.facts import HTTP_PORT, MODEL_ID, READY_TIMEOUT_S

BASE_URL = f"http://127.0.0.1:{HTTP_PORT}"
ABSENT_S = 30  # how long the application may be missing from `serve status` once deployed
LOG_DIR = "/tmp/ray/session_latest/logs/serve"


def request(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if os.environ.get(KEY_ENV):  # the optional key check (serve_plugins/api_key.py) is on
        headers["Authorization"] = f"Bearer {os.environ[KEY_ENV]}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def app_status() -> str:
    """The Serve application's status line from `serve status`, e.g. DEPLOYING or DEPLOY_FAILED."""
    try:
        out = subprocess.run(["serve", "status"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e.__class__.__name__})"
    for line in out.splitlines():
        if line.strip().startswith("status:"):
            return line.split(":", 1)[1].strip()  # the first one is the application's
    return "no application"


def log_tail(lines: int = 40) -> str:
    """The last lines of each replica log, on whichever node of the cluster the replica runs:
    where the engine's load errors end up; then the Serve controller's record of the last replica
    that raised as it started (a bad engine argument), which only the controller's log holds. Read
    through Ray's log API; from this node's files when that does not answer (the cluster is gone,
    or still starting)."""
    parts = [f"----- {name} (last {text.count(chr(10))} lines)\n{text}" for name, text in _logs("replica_*", lines)]
    if parts and not any(part.count("\n") > 1 for part in parts):
        # RAY_SERVE_THROUGHPUT_OPTIMIZED buffers RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE (1,000) records per replica.
        parts.append("(empty: the high-throughput mode writes a replica's log at an error or every 1,000 lines; "
                     "export RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1 before ray start to see every line)")
    parts += [f"----- {name}: the last replica that raised as it started\n{error}"
              for name, text in _logs("controller_*", 2000) if (error := replica_error(text))]
    return "\n".join(parts) or f"(no replica logs under {LOG_DIR})"


def replica_error(controller_log: str, lines: int = 8) -> str | None:
    """The controller's last "Exception in Replica" record: its first line and the end of its traceback,
    where the reason stands."""
    records = re.split(r"\n(?=(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \d{4}-)", controller_log)
    failed = [r.rstrip("\n").splitlines() for r in records if "-- Exception in Replica(" in r.split("\n", 1)[0]]
    if not failed:
        return None
    first, *rest = failed[-1]
    return "\n".join([first, *(["  ..."] if len(rest) > lines else []), *rest[-lines:]]) + "\n"


def _logs(pattern: str, lines: int) -> list[tuple[str, str]]:
    """(where, last lines) of each Serve log file named `pattern`, on every alive node of the cluster; this
    node's files when Ray's log API does not answer."""
    try:
        found = _cluster_logs(pattern, lines)
    except Exception:  # whatever the API fails with, the local files still tell something
        found = []
    if not found:
        for path in sorted(glob.glob(os.path.join(LOG_DIR, f"{pattern}.log")), key=os.path.getmtime):
            with open(path, errors="replace") as f:
                found.append((path, "".join(f.readlines()[-lines:])))
    return found


def _cluster_logs(pattern: str, lines: int) -> list[tuple[str, str]]:
    from ray.util.state import get_log, list_logs, list_nodes

    found = []
    for node in list_nodes(filters=[("state", "=", "ALIVE")], timeout=10):
        for names in list_logs(node_id=node.node_id, glob_filter=f"serve/{pattern}", timeout=10).values():
            for name in names:
                tail = "".join(get_log(node_id=node.node_id, filename=name, tail=lines, timeout=10))
                found.append((f"{name} on node {node.node_ip}{' (head)' if node.is_head_node else ''}", tail))
    return found


def models_ready(base_url: str, model: str) -> str | None:
    """None when /v1/models lists `model`, else a short reason."""
    try:
        code, body = request("GET", f"{base_url}/v1/models", timeout=10)
    except (urllib.error.URLError, OSError) as e:
        return f"no answer ({getattr(e, 'reason', e)})"
    if code != 200:
        return f"HTTP {code}"
    ids = [m["id"] for m in json.loads(body).get("data", [])]
    return None if model in ids else f"model not listed yet ({ids})"


def wait_until_ready(base_url: str = BASE_URL, model: str = MODEL_ID, timeout_s: float = READY_TIMEOUT_S, poll_s: float = 10) -> float:
    """Block until `model` answers a chat completion; return the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout_s
    reason = "not polled yet"

    def fail(why: str) -> RuntimeError:
        print(log_tail(), flush=True)
        return RuntimeError(f"{why} after {time.monotonic() - start:.0f} s; the replica logs are printed above")

    absent_since = None
    while time.monotonic() < deadline:
        reason = models_ready(base_url, model)
        if reason is None:
            break
        status = app_status()
        print(f"[{time.monotonic() - start:5.0f} s] /v1/models: {reason}; Serve app: {status}", flush=True)
        if status.startswith("DEPLOY_FAILED"):
            raise fail("the Serve application failed to deploy")
        # `serve run` (Ray 2.60) answers a failed deploy by shutting Serve down and exiting 0, so the
        # app is gone rather than DEPLOY_FAILED; its output above the readiness check says why.
        absent_since = (absent_since or time.monotonic()) if status == "no application" else None
        if absent_since and time.monotonic() - absent_since > ABSENT_S:
            raise fail(f"no Serve application for {ABSENT_S} s: the deploy failed (see serve run's output) or was deleted")
        time.sleep(poll_s)
    else:
        raise fail(f"not ready within {timeout_s:.0f} s (last: {reason})")

    one_token = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    remaining = max(deadline - time.monotonic(), 1)
    try:
        code, body = request("POST", f"{base_url}/v1/chat/completions", one_token, timeout=remaining)
    except (urllib.error.URLError, OSError) as e:
        raise fail(f"the first chat completion failed ({e})") from e
    if code != 200:
        raise fail(f"the first chat completion answered HTTP {code}: {body[:300]}")
    elapsed = time.monotonic() - start
    print(f"ready: {model} answered a one-token chat completion after {elapsed:.0f} s", flush=True)
    return elapsed


if __name__ == "__main__":  # python -m tutorial.ready: show why a deployment is not up
    print(log_tail())
