"""Who can reach the endpoint: where it listens, and whether the API key check is on.

The endpoint listens where `serve start --http-host` says (the notebook: 127.0.0.1). The key check
itself is serve_plugins/api_key.py, which every Serve HTTP server loads (serve_plugins/proxy.py).
"""

import os

import psutil

from serve_plugins.api_key import KEY_ENV
from tutorial.facts import HAPROXY_SIDE_DOORS, HTTP_PORT


def listening(port: int | None = None) -> list[tuple[str, int, psutil.Process | None]]:
    """(address, port, owner) of each listening TCP socket, or only those on `port`, sorted. The owner
    is None when /proc hides it: another user's process. The one lookup of who owns a port."""
    found = []
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and port in (None, c.laddr.port):
            try:
                found.append((c.laddr.ip, c.laddr.port, psutil.Process(c.pid) if c.pid else None))
            except psutil.NoSuchProcess:
                continue
    return sorted(found, key=lambda f: f[:2])


def listens_on(p: psutil.Process, port: int) -> bool:
    """Whether `p` holds a listening socket on `port`, shared ones included (HAProxy hands its
    sockets to the next process at a reload, and the system table names only one owner)."""
    try:
        return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in p.net_connections())
    except psutil.Error:
        return False


def name(p: psutil.Process | None) -> str:
    try:
        return p.name() if p else "another user's process"
    except psutil.NoSuchProcess:
        return "a process that just ended"


def listeners(port: int = HTTP_PORT) -> dict[str, str]:
    """Who listens on `port`, by local address: {'127.0.0.1:8000': 'haproxy'}."""
    return {f"{ip}:{at}": name(owner) for ip, at, owner in listening(port)}


if __name__ == "__main__":
    print("listening on", ", ".join(f"{a} ({name})" for a, name in listeners().items()) or "nothing",
          "| API key check:", "on" if os.environ.get(KEY_ENV) else f"off ({KEY_ENV} not set)")
    doors = {a: name for port in HAPROXY_SIDE_DOORS for a, name in listeners(port).items()}
    print("HAProxy's statistics and metrics:", ", ".join(doors) or "not listening")
