"""The optional API key check: with SERVE_API_KEY set in the environment of `ray start`, every request
must carry `Authorization: Bearer <that key>` or gets 401; unset, there is no check. The key is
never logged or echoed. proxy.middlewares installs it on each of Serve's HTTP servers.
"""

import hmac
import json

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
