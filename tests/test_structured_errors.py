"""The structured-output middleware turns vLLM's silent 500 into a clear 400, and nothing else. The
reliability run (tests/test_reliability.py) sends the real case through a live deployment."""

import asyncio
import json

import pytest

from serve_plugins import api_key, no_replica, proxy
from serve_plugins.structured_errors import MESSAGE, ClearStructuredOutputErrors

EMPTY_500 = json.dumps({"error": {"message": "", "type": "InternalServerError", "param": None, "code": 500}}).encode()
# What vLLM 0.29 answers a schema that refers to itself.
GENERIC_500 = json.dumps({"error": {"message": "Internal server error", "type": "InternalServerError", "param": None,
                                    "code": 500}}).encode()
SELF_REF = {"model": "m", "messages": [], "response_format": {"type": "json_schema",
                                                              "json_schema": {"name": "x", "schema": {"$ref": "#"}}}}


def app_answering(status: int, chunks: list[bytes]):
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % sum(map(len, chunks)))]})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
    return app


def call(app, request: dict | bytes, method: str = "POST") -> list[dict]:
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    parts = [{"type": "http.request", "body": body[:10], "more_body": True},
             {"type": "http.request", "body": body[10:], "more_body": False}]
    sent = []

    async def receive():
        return parts.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/v1/chat/completions", "headers": []}
    asyncio.run(ClearStructuredOutputErrors(app)(scope, receive, send))
    return sent


@pytest.mark.parametrize("answer", [EMPTY_500, GENERIC_500])
def test_a_silent_500_for_a_structured_output_request_becomes_a_clear_400(answer):
    start, body = call(app_answering(500, [answer[:20], answer[20:]]), SELF_REF)
    assert start["status"] == 400 and body["body"] == MESSAGE
    assert dict(start["headers"])[b"content-length"] == str(len(MESSAGE)).encode()
    assert "structured-output" in json.loads(MESSAGE)["error"]["message"]


@pytest.mark.parametrize("request_, answer", [
    ({"model": "m", "messages": []}, EMPTY_500),  # no structured output asked for: a real server error
    ({**SELF_REF, "response_format": {"type": "text"}}, EMPTY_500),
    (SELF_REF, json.dumps({"error": {"message": "CUDA out of memory", "code": 500}}).encode()),  # says what failed
    (b"not json", EMPTY_500),
])
def test_other_500s_pass_unchanged(request_, answer):
    start, body = call(app_answering(500, [answer]), request_)
    assert start["status"] == 500 and body["body"] == answer


def test_streams_and_other_methods_pass_at_once():
    chunks = [b"data: 1\n\n", b"data: [DONE]\n\n"]
    sent = call(app_answering(200, chunks), SELF_REF)
    assert [m.get("body") for m in sent[1:]] == chunks and sent[0]["status"] == 200
    assert call(app_answering(500, [EMPTY_500]), SELF_REF, method="GET")[0]["status"] == 500


def test_serve_installs_it_with_or_without_the_key(monkeypatch):
    monkeypatch.delenv(api_key.KEY_ENV, raising=False)
    assert [m.cls for m in proxy.middlewares()] == [ClearStructuredOutputErrors]  # a replica, or no Ray at all
    monkeypatch.setenv(api_key.KEY_ENV, "k")
    assert [m.cls for m in proxy.middlewares()] == [api_key.RequireApiKey, ClearStructuredOutputErrors]
    # In Serve's proxy, where requests wait for replicas, the 503 that quotes the engine's error sits inside
    # the key check: Ray wraps each middleware around the one before.
    monkeypatch.setattr(no_replica, "in_serve_proxy", lambda: True)
    assert [m.cls for m in proxy.middlewares()] == [no_replica.AnswerWhenNoReplicaCanStart, api_key.RequireApiKey,
                                                    ClearStructuredOutputErrors]
