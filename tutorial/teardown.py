"""Stop the deployment and the Ray cluster, and prove nothing is left behind.

`serve shutdown -y` exits 0 even when token authentication stops it from reaching the cluster,
so success is judged by effect: nothing listens on port 8000 and no Ray or vLLM process runs.

  python -m tutorial.teardown          shut down whatever is running, then verify
  python -m tutorial.teardown --check  only verify (exit 1 and say what is left)
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

PORT = 8000
# Command-line marks of the processes a Ray Serve LLM deployment starts.
PROCESS_MARKS = ("raylet", "gcs_server", "ray::", "/ray/dashboard/", "/ray/_private/", "VLLM::", "EngineCore")


def port_open(port: int = PORT) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ray_processes() -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        if p.pid == os.getpid():
            continue
        cmd = " ".join(p.info["cmdline"] or []) or (p.info["name"] or "")
        if any(mark in cmd for mark in PROCESS_MARKS):
            found.append(f"{p.pid} {cmd[:120]}")
    return found


def leftovers() -> list[str]:
    left = [f"port {PORT} is still listening"] if port_open() else []
    return left + [f"process {p}" for p in ray_processes()]


def _run(cmd: list[str], env: dict) -> None:
    print("$", " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, env=env, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"  {cmd[0]} did not finish: {e}", flush=True)


def shutdown() -> None:
    env = dict(os.environ)
    if (Path.home() / ".ray" / "auth_token").exists():
        env.setdefault("RAY_AUTH_MODE", "token")  # a cluster started beside a token file requires it
    if port_open():
        _run(["serve", "shutdown", "-y"], env)
    if ray_processes():
        _run(["ray", "stop"], env)
    deadline = time.monotonic() + 30
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(1)
    if ray_processes():
        _run(["ray", "stop", "--force"], env)
        for p in psutil.process_iter(["cmdline"]):  # engine processes that outlived their parent
            if any(m in " ".join(p.info["cmdline"] or []) for m in ("VLLM::", "EngineCore")):
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        time.sleep(2)


def main(argv: list[str]) -> int:
    if "--check" not in argv:
        shutdown()
    left = leftovers()
    for item in left:
        print(f"LEFT {item}")
    print(f"port {PORT} closed, no Ray or vLLM process left" if not left else "teardown incomplete")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
