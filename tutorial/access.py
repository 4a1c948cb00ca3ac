"""Who can reach the endpoint: where it listens, and an optional API key.

The endpoint listens where `serve start --http-host` says (the notebook: 127.0.0.1), and Serve
checks no key. Serve calls `middlewares` when an HTTP server of its starts: its Python proxy, and
in the high-throughput mode every ingress replica that HAProxy forwards to (the notebook points
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH at it). With SERVE_API_KEY set in the environment of
`ray start`, every request must carry `Authorization: Bearer <that key>` or gets 401; unset,
there is no key check. The key is never logged or echoed.
"""

import hmac
import json
import os

import psutil

from tutorial.facts import HAPROXY_SIDE_DOORS, HTTP_PORT

KEY_ENV = "SERVE_API_KEY"
_UNAUTHORIZED = json.dumps(
    {
        "error": {
            "message": "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
).encode()


def is_open(path: str) -> bool:
    """Serve's health routes (/-/healthz, /-/routes) stay open for load balancers, and so does the
    route where HAProxy asks the router replica which replica takes a request: HAProxy sends it
    no Authorization header, and its answer is a replica id, never model output."""
    return path.startswith("/-/") or path == "/internal/route"


class RequireApiKey:
    """Pure ASGI middleware: answers 401 unless the bearer token equals `key`."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not is_open(scope["path"]):
            scheme, _, sent = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            # The scheme is case-insensitive (RFC 9110); the key is compared in constant time.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(sent.strip(), self.key):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": _UNAUTHORIZED})
                return
        await self.app(scope, receive, send)


def middlewares() -> list:
    """Serve's proxy callback: the key check when SERVE_API_KEY is set, and a clear 400 where vLLM
    answers a structured-output request with a 500 that says nothing (tutorial/structured_errors.py)."""
    from starlette.middleware import Middleware

    from tutorial.structured_errors import ClearStructuredOutputErrors

    key = os.environ.get(KEY_ENV)
    return [*([Middleware(RequireApiKey, key=key)] if key else []), Middleware(ClearStructuredOutputErrors)]


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
