"""Who can reach the endpoint: where it listens, and an optional API key.

Ray Serve's HTTP proxy listens on 127.0.0.1 unless RAY_SERVE_DEFAULT_HTTP_HOST=0.0.0.0 is in
the environment of `serve run`, and it checks no key. Serve calls `middlewares` when its proxy
starts (the notebook points RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH at it): with SERVE_API_KEY
set in the environment of `ray start`, every request must carry `Authorization: Bearer <that
key>` or gets 401; unset, nothing changes. The key is never logged or echoed.
"""

import hmac
import json
import os

import psutil

from tutorial.facts import HTTP_PORT

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


class RequireApiKey:
    """Pure ASGI middleware: answers 401 unless the bearer token equals `key`."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope, receive, send):
        # Serve's own health routes (/-/healthz, /-/routes) stay open for load balancers.
        if scope["type"] == "http" and not scope["path"].startswith("/-/"):
            scheme, _, sent = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            # The scheme is case-insensitive (RFC 9110); the key is compared in constant time.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(sent.strip(), self.key):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": _UNAUTHORIZED})
                return
        await self.app(scope, receive, send)


def middlewares() -> list:
    """Serve's proxy callback: the key check when SERVE_API_KEY is set, else nothing."""
    from starlette.middleware import Middleware

    key = os.environ.get(KEY_ENV)
    return [Middleware(RequireApiKey, key=key)] if key else []


def listen_addresses(port: int = HTTP_PORT) -> list[str]:
    """The local addresses a TCP socket on `port` listens on, e.g. ['127.0.0.1:8000']."""
    return sorted({f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN and c.laddr.port == port})


if __name__ == "__main__":
    print("listening on", ", ".join(listen_addresses()) or "nothing", "| API key check:",
          "on" if os.environ.get(KEY_ENV) else f"off ({KEY_ENV} not set)")
