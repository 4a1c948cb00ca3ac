"""The callback every Serve HTTP server runs as it starts (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH):
Serve's Python proxy and, in the high-throughput mode, every replica that HAProxy forwards to."""

import os

from serve_plugins import no_replica
from serve_plugins.api_key import KEY_ENV, RequireApiKey
from serve_plugins.structured_errors import ClearStructuredOutputErrors


def middlewares() -> list:
    """The key check when SERVE_API_KEY is set, a clear 400 where vLLM answers a structured-output
    request with a 500 that says nothing, and, in Serve's Python proxy, a 503 with Serve's reason for a
    request that waits on a replica Serve cannot start. Ray wraps them in this order, each around the
    one before: the 503, with the engine's error in it, goes only to a caller that passed the key check."""
    from starlette.middleware import Middleware

    key = os.environ.get(KEY_ENV)
    waits = [Middleware(no_replica.AnswerWhenNoReplicaCanStart)] if no_replica.in_serve_proxy() else []
    return [*waits, *([Middleware(RequireApiKey, key=key)] if key else []), Middleware(ClearStructuredOutputErrors)]
