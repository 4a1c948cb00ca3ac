"""One streaming chat request read to its end: what the load of every experiment is made of.

An answer is
- ok: HTTP 200, and a stream that ends with `data: [DONE]` after a chunk with a finish_reason and
  the usage chunk (stream_options.include_usage);
- failed: an error status, with the last line of its body;
- broken: anything else, such as a stream that ends without [DONE] or finish_reason (what a
  killed HAProxy process leaves the client), a chunk that is not JSON, or a connection error.
"""

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass

import httpx

from serve_plugins.api_key import KEY_ENV
from tutorial.facts import MODEL_ID
from tutorial.ready import BASE_URL

CHAT = f"{BASE_URL}/v1/chat/completions"


@dataclass
class Answer:
    outcome: str  # ok, failed or broken
    status: int | str  # the HTTP status, or the error's name when none came
    detail: str
    seconds: float  # from sending to the stream's end
    first_s: float | None  # from sending to the first chunk
    tokens: int  # completion tokens, from the usage chunk (0 unless ok)
    tries: int = 1

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def body(content: str, max_tokens: int, **extra) -> dict:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, **extra}


def judge(status: int, lines: list[str]) -> tuple[str, str, int]:
    """(outcome, detail, completion tokens) of a response's non-empty lines."""
    last = (lines or [""])[-1]
    if status != 200:
        return "failed", f"HTTP {status}: {last[:200]}", 0
    if last != "data: [DONE]":
        return "broken", f"no [DONE] after {len(lines)} lines: {last[:200]}", 0
    try:
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    except ValueError as e:
        return "broken", f"a chunk that is not JSON: {e}"[:200], 0
    if not any(choice.get("finish_reason") for c in chunks for choice in c.get("choices") or []):
        return "broken", "no finish_reason before [DONE]", 0
    usage = chunks[-1].get("usage") if chunks else None
    if not usage:
        return "broken", f"no usage before [DONE]: {lines[-2][:200] if len(lines) > 1 else ''}", 0
    return "ok", "", usage["completion_tokens"]


def auth() -> dict:
    """The API key of the environment (SERVE_API_KEY) as a header, if one is set."""
    return {"Authorization": f"Bearer {os.environ[KEY_ENV]}"} if os.environ.get(KEY_ENV) else {}


def chat(http: httpx.Client, content: str, max_tokens: int, retry_503: int = 0, url: str = CHAT, **extra) -> Answer:
    """One streaming request. A 503 (back-pressure) is sent again up to `retry_503` times, after 1, 2, ...
    seconds, and counts only as the last try ends."""
    sent = time.monotonic()
    for tries in range(1, retry_503 + 2):
        try:
            first, lines = None, []
            with http.stream("POST", url, json=body(content, max_tokens, **extra)) as r:
                if r.status_code == 503 and tries <= retry_503:
                    time.sleep(tries)
                    continue
                for line in r.iter_lines():
                    if line:
                        first = time.monotonic() - sent if first is None else first
                        lines.append(line)
            outcome, detail, tokens = judge(r.status_code, lines)
            return Answer(outcome, r.status_code, detail, time.monotonic() - sent, first, tokens, tries)
        except httpx.HTTPError as e:  # refused, reset, timed out
            return Answer("broken", type(e).__name__, repr(e)[:200], time.monotonic() - sent, None, 0, tries)


def clients(n: int, ask, stop: threading.Event | None = None, requests: int | None = None,
            timeout: float = 300, headers: dict | None = None) -> list[threading.Thread]:
    """`n` client threads, each with its own connection, that call `ask(http, i)` for the i-th request
    until `stop` is set or `requests` have been sent between them. Started; join them to wait. They
    send the API key of the environment (SERVE_API_KEY) unless given `headers`."""
    counter, lock = iter(range(requests)) if requests is not None else itertools.count(), threading.Lock()
    headers = auth() if headers is None else headers

    def client() -> None:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=10), headers=headers) as http:
            while not (stop and stop.is_set()):
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                ask(http, i)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads
