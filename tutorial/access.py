"""Who can reach the endpoint: where it listens, and whether the API key check is on.

The endpoint listens where `serve start --http-host` says (the notebook: 127.0.0.1). The key check
itself is serve_plugins/api_key.py, which every Serve HTTP server loads (serve_plugins/proxy.py).
"""

import os

import psutil

from serve_plugins.api_key import KEY_ENV
from tutorial.facts import HAPROXY_SIDE_DOORS, HTTP_PORT


def listeners(port: int = HTTP_PORT) -> dict[str, str]:
    """Who listens on `port`, by local address: {'127.0.0.1:8000': 'haproxy'}."""
    found = {}
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
            try:
                found[f"{c.laddr.ip}:{c.laddr.port}"] = psutil.Process(c.pid).name() if c.pid else "another user's process"
            except psutil.NoSuchProcess:
                continue
    return dict(sorted(found.items()))


if __name__ == "__main__":
    print("listening on", ", ".join(f"{a} ({name})" for a, name in listeners().items()) or "nothing",
          "| API key check:", "on" if os.environ.get(KEY_ENV) else f"off ({KEY_ENV} not set)")
    doors = {a: name for port in HAPROXY_SIDE_DOORS for a, name in listeners(port).items()}
    print("HAProxy's statistics and metrics:", ", ".join(doors) or "not listening")
