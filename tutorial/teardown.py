"""Stop the Ray cluster this tutorial started, and nothing else, then prove none of it is left.

`ray stop` would stop every Ray process on the machine, a cluster the reader runs for other work
included. The launch cell starts Ray with `setsid`, so its daemons, workers and engine processes
share one session of their own; `--remember` writes that session's id down, and teardown stops
exactly the processes of the remembered sessions (raylet first and the GCS last, as `ray stop`),
then removes the HAProxy folders those sessions made (serve_plugins/haproxy_files.py). A record proves
the session is still the tutorial's: the machine's boot id, and the adopted process (its start
time and command) or a Ray or vLLM process started since. An entry that fails, as after a reboot
or once its id belongs to someone else's processes, is dropped, never stopped. A launch interrupted
before `--remember` wrote nothing down: its processes still carry the kernel's launch mark
(serve_plugins/cluster_env.py), and teardown run from that kernel stops their sessions too.
Success is judged by effect: none of them runs, and port 8000 has no listener of ours.

  python -m tutorial.teardown --remember [PORT]  adopt the Ray node listening on PORT (6379, the
                                                 head's GCS, unless a worker's node manager port)
  python -m tutorial.teardown             stop what was adopted, then verify
  python -m tutorial.teardown --check     only verify (exit 1 and say what is left)
"""

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import psutil

from serve_plugins import cluster_env, haproxy_files
from tutorial import access
from tutorial.facts import DASHBOARD_PORT, HTTP_PORT, RAY_PORT

PORT = HTTP_PORT
# What the tutorial adopted; ignored by git. A CI runner keeps it outside the checkout
# (TUTORIAL_CLUSTER_RECORD), so that a cluster one job leaked is still known as ours to the next.
RECORD = Path(os.environ.get("TUTORIAL_CLUSTER_RECORD")
              or Path(__file__).resolve().parent.parent / ".tutorial-cluster.json").expanduser()
RAY_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # `ray start` writes it, `ray stop` deletes it
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # new at every boot
# Command-line marks of Ray and vLLM processes: what a foreign one looks like, to name it.
# HAProxy is among them: `ray stop` leaves the one Serve's high-throughput mode started.
PROCESS_MARKS = ("raylet", "gcs_server", "ray::", "/ray/dashboard/", "ray-dashboard-", "/ray/_private/",
                 "/ray/autoscaler/", "ray.util.client.server", "VLLM::", "EngineCore", "haproxy")
GRACE_S = 30
CLEAN = f"port {PORT} closed, no Ray or vLLM process of this tutorial left"  # the last line when all is stopped


def port_open(port: int = PORT) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def listener(port: int) -> psutil.Process | None:
    """The process listening on `port`; None when nothing does, or the owner is not visible
    (another user's process: /proc hides its sockets)."""
    return next((owner for _, _, owner in access.listening(port) if owner), None)


def describe(p: psutil.Process | None) -> str:
    if p is None:
        return "a process of another user"
    try:
        return f"pid {p.pid} ({' '.join(p.cmdline())[:100] or p.name()})"
    except psutil.Error:
        return f"pid {p.pid}"


def _entries() -> list[dict]:
    try:
        entries = json.loads(RECORD.read_text())["sessions"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [e for e in entries if isinstance(e, dict)]  # an older record's bare ids prove nothing


def _command(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _still_ours(entry: dict) -> bool:
    """The session is the one adopted: same boot, and its adopted process still runs unchanged, or a
    Ray or vLLM process started since runs in it. An id that a reboot or pid reuse handed to someone
    else's processes fails both."""
    if entry.get("boot_id") != BOOT_ID.read_text().strip():
        return False
    anchor = entry["anchor"]
    for p in in_sessions({entry["sid"]}):
        try:
            started = p.create_time()
        except psutil.Error:
            continue
        command = _command(p)
        if p.pid == anchor["pid"] and started == anchor["started"] and command[:200] == anchor["command"]:
            return True
        if started >= anchor["started"] and any(m in command for m in PROCESS_MARKS):
            return True
    return False


def sessions() -> list[int]:
    """The adopted sessions that are still the tutorial's; stale entries are dropped from the record."""
    entries = _entries()
    live = [e for e in entries if _still_ours(e)]
    if live != entries:
        _write(live)
    return [e["sid"] for e in live]


def _write(entries: list[dict]) -> None:
    if entries:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps({"sessions": entries}, indent=1))
    else:
        RECORD.unlink(missing_ok=True)


def _own_sessions() -> set[int]:
    """This shell's session and its parents' (the notebook's kernel, Jupyter): never ours to stop."""
    return {os.getsid(0), *(os.getsid(a.pid) for a in psutil.Process().parents())}


def marked(name: str, value: str) -> dict[psutil.Process, int]:
    """Ray processes whose environment sets `name` to `value`, with their sessions. Ray's agents and
    workers rename themselves (setproctitle), which blanks the environment /proc shows of them: their
    session, shared with a marked daemon, is what makes them found."""
    found = {}
    for p in ray_processes():
        try:
            if p.environ().get(name) == value:
                found[p] = os.getsid(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):  # gone, or another account's
            pass
    return found


def marked_sessions() -> set[int]:
    """Sessions of the Ray processes that carry this environment's launch mark: started from this kernel."""
    mark = os.environ.get(cluster_env.LAUNCH_MARK)
    return set(marked(cluster_env.LAUNCH_MARK, mark).values()) - _own_sessions() if mark else set()


def remember_session(pid: int) -> int:
    """Adopt the session of process `pid`: teardown will stop every process in it."""
    sid = os.getsid(pid)
    if sid in _own_sessions():
        raise RuntimeError(f"pid {pid} shares this shell's session {sid}; start Ray with `setsid --wait ray start ...` "
                           f"so its processes have a session of their own")
    p = psutil.Process(pid)
    entry = dict(sid=sid, boot_id=BOOT_ID.read_text().strip(),
                 anchor=dict(pid=pid, started=p.create_time(), command=_command(p)[:200]),
                 # HAProxy folders that were there before: the session's own are the ones it adds.
                 haproxy_folders_before=sorted(haproxy_files.node_folders()))
    sessions()  # drops stale entries first
    _write([e for e in _entries() if e["sid"] != sid] + [entry])
    return sid


def remember(port: int = RAY_PORT) -> int:
    """Adopt the Ray node whose process listens on `port`: `ray start` just succeeded there, so it is ours."""
    node = listener(port)
    if node is None:
        raise RuntimeError(f"no Ray process of this user listens on port {port}")
    return remember_session(node.pid)


def in_sessions(sids: set[int]) -> list[psutil.Process]:
    """Running processes whose session is one of `sids`, this one excluded."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and os.getsid(p.pid) in sids:
                found.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return found


def our_sessions() -> set[int]:
    """The adopted sessions and the marked ones."""
    return set(sessions()) | marked_sessions()


def ours() -> list[psutil.Process]:
    """Running processes of our sessions."""
    return in_sessions(our_sessions())


def ray_processes() -> list[psutil.Process]:
    """Every running Ray, vLLM or HAProxy process on the machine, whoever started it."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.pid != os.getpid() and any(m in cmd for m in PROCESS_MARKS):
            found.append(p)
    return found


def foreign() -> list[str]:
    """Ray or vLLM processes, and a listener on port 8000, that the tutorial did not start."""
    mine = {p.pid for p in ours()}
    found = [describe(p) for p in ray_processes() if p.pid not in mine]
    owner = listener(PORT)
    if port_open() and (owner is None or owner.pid not in mine):
        found.append(f"port {PORT}: {describe(owner)}")
    return found


def leftovers() -> list[str]:
    """What the tutorial started that still runs."""
    procs = ours()
    left = [f"process {describe(p)}" for p in procs]
    owner = listener(PORT)
    if owner is not None and owner.pid in {p.pid for p in procs}:
        left.insert(0, f"port {PORT} is still listening")
    return left


def stop(procs: list[psutil.Process]) -> None:
    """Terminate, then kill what is left after a third of the grace period."""
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S / 3)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


def _remove_haproxy_folders(entries: list[dict]) -> None:
    """The HAProxy folders the sessions made, once nothing of them runs; no other (none without a session)."""
    if not entries:
        return
    before = set().union(*(e.get("haproxy_folders_before", []) for e in entries))
    for name in haproxy_files.node_folders() - before:
        shutil.rmtree(haproxy_files.FOLDER / name, ignore_errors=True)


def shutdown() -> None:
    """Stop every process of our sessions: raylets, then the rest, then the GCS."""
    sids = our_sessions()
    procs = in_sessions(sids)
    entries = _entries()
    if not procs:
        _remove_haproxy_folders(entries)
        RECORD.unlink(missing_ok=True)
        return
    print(f"stopping the {len(procs)} processes of the Ray cluster this tutorial started", flush=True)
    # The cluster's ports that its processes hold. Once in CI the next `ray start` still found the dashboard's
    # port taken right after a teardown; wait until each is free, so the next cluster gets it.
    pids = {p.pid for p in procs}
    held = [port for port in (RAY_PORT, DASHBOARD_PORT, PORT) if (owner := listener(port)) and owner.pid in pids]
    raylets = [p for p in procs if _name(p) == "raylet"]
    gcs = [p for p in procs if _name(p) == "gcs_server"]
    for bucket in (raylets, [p for p in procs if p not in raylets + gcs], gcs):
        stop(bucket)
    time.sleep(1)
    stop(in_sessions(sids))  # anything the first round started on its way out
    deadline = time.monotonic() + GRACE_S
    while any(port_open(port) for port in held) and time.monotonic() < deadline:
        time.sleep(0.5)
    if RAY_ADDRESS_FILE.exists() and not port_open(RAY_PORT):
        RAY_ADDRESS_FILE.unlink(missing_ok=True)  # as `ray stop` does, so no one connects to a dead head
    if not in_sessions(sids):  # all stopped: nothing of the tutorial's runs any more
        _remove_haproxy_folders(entries)
        RECORD.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if "--remember" in argv:
        port = argv[argv.index("--remember") + 1:][:1]
        print(f"teardown will stop Ray session {remember(int(port[0]) if port else RAY_PORT)} and nothing else")
        return 0
    if "--check" not in argv:
        shutdown()
    left = leftovers()
    for item in left:
        print(f"LEFT {item}")
    for item in foreign():
        print(f"not started by this tutorial, left running: {item}")
    if left:
        print("teardown incomplete")
        return 1
    print(CLEAN if not port_open()
          else f"no Ray or vLLM process of this tutorial left; port {PORT} belongs to someone else")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
