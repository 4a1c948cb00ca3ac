"""The callback every Serve HTTP server runs as it starts (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH):
Serve's Python proxy and, in the high-throughput mode, every replica that HAProxy forwards to."""

import os

from serve_plugins.api_key import KEY_ENV, RequireApiKey
from serve_plugins.structured_errors import ClearStructuredOutputErrors


def middlewares() -> list:
    """The key check when SERVE_API_KEY is set, and a clear 400 where vLLM answers a structured-output
    request with a 500 that says nothing."""
    from starlette.middleware import Middleware

    key = os.environ.get(KEY_ENV)
    return [*([Middleware(RequireApiKey, key=key)] if key else []), Middleware(ClearStructuredOutputErrors)]
