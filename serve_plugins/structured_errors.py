"""A clear 400 where vLLM answers a structured-output request with a 500 that says nothing.

vLLM answers some structured-output specifications it cannot use (a JSON schema that refers to
itself; in older versions also a malformed schema, regex or grammar) with `500` and no message that
says what failed: empty, or "Internal server error" (vllm-project/vllm#57725). The engine keeps
serving; only the caller is misled. This middleware, on each of Serve's HTTP servers
(serve_plugins/proxy.py installs it), turns exactly that answer to a request that asked for structured
output into `400` with a message that names the likely cause. Every other response passes through
as it is, streams included.
"""

import json

# vLLM's messages for a 500 that says nothing of its cause.
SILENT = ("", "Internal server error")
# vLLM's own request fields that ask for structured output (besides OpenAI's response_format).
STRUCTURED = ("structured_outputs", "guided_json", "guided_regex", "guided_grammar", "guided_choice")
MESSAGE = json.dumps({"error": {
    "message": "The engine could not use this request's structured-output specification (response_format or "
               "structured_outputs): check the JSON schema, regex or grammar; a schema that refers to itself with "
               "no way out is one cause. The engine answered 500 without saying why.",
    "type": "BadRequestError", "param": "response_format", "code": 400}}).encode()


def asks_for_structure(body: bytes) -> bool:
    try:
        request = json.loads(body)
    except ValueError:
        return False
    if not isinstance(request, dict):
        return False
    fmt = request.get("response_format")
    return any(request.get(k) for k in STRUCTURED) or isinstance(fmt, dict) and fmt.get("type") != "text"


def silent_internal_error(body: bytes) -> bool:
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == 500 and (error.get("message") or "") in SILENT


class ClearStructuredOutputErrors:
    """Pure ASGI middleware: holds back only a 500's start until its body shows whether it is vLLM's
    silent one for a structured-output request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request, start, answer = [], None, []

        async def receive_and_keep():
            message = await receive()
            if message["type"] == "http.request":
                request.append(message.get("body", b""))
            return message

        async def send_or_hold(message):
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] == 500:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            answer.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(answer)
            if silent_internal_error(body) and asks_for_structure(b"".join(request)):
                start = {**start, "status": 400, "headers": [(k, v) for k, v in start["headers"]
                                                             if k.lower() != b"content-length"]
                         + [(b"content-length", str(len(MESSAGE)).encode())]}
                body = MESSAGE
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive_and_keep, send_or_hold)
