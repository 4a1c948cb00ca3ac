"""The lab's one streaming client (lab/stream.py) counts an answer as ok only when the stream ends
with [DONE] after a finish_reason and the usage; an error status is failed, anything else broken.
Checked against a local HTTP server that answers as vLLM does, or cuts the stream, or pushes back."""

import http.server
import json
import threading

import httpx
import pytest

from lab import stream

CHUNKS = [{"choices": [{"delta": {"content": "4"}, "finish_reason": None}]},
          {"choices": [{"delta": {}, "finish_reason": "stop"}]},
          {"choices": [], "usage": {"completion_tokens": 2}}]
ANSWERS = {  # path -> (status, the lines of the body)
    "/ok": (200, [f"data: {json.dumps(c)}" for c in CHUNKS] + ["data: [DONE]"]),
    "/cut": (200, [f"data: {json.dumps(c)}" for c in CHUNKS[:1]]),  # as a killed HAProxy leaves it
    "/no-finish": (200, [f"data: {json.dumps(c)}" for c in CHUNKS[::2]] + ["data: [DONE]"]),
    "/no-usage": (200, [f"data: {json.dumps(c)}" for c in CHUNKS[:2]] + ["data: [DONE]"]),
    "/not-json": (200, ["data: {half", "data: [DONE]"]),
    "/bad": (400, ['{"error": {"message": "max_tokens must be at least 1"}}']),
}


class Server(http.server.BaseHTTPRequestHandler):
    busy = 2  # how many 503s /busy answers before it answers as /ok

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        path = self.path
        if path == "/busy":
            Server.busy -= 1
            path = "/ok" if Server.busy < 0 else "/bad"
            status, lines = (503, ["overloaded"]) if path == "/bad" else ANSWERS[path]
        else:
            status, lines = ANSWERS[path]
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write("".join(f"{line}\n\n" for line in lines).encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("path, outcome, detail", [
    ("/ok", "ok", ""), ("/cut", "broken", "no [DONE] after 1 lines"), ("/no-finish", "broken", "no finish_reason"),
    ("/no-usage", "broken", "no usage before [DONE]"), ("/not-json", "broken", "a chunk that is not JSON"),
    ("/bad", "failed", "HTTP 400: {\"error\""),
])
def test_an_answer_is_ok_only_when_it_ends_as_vllm_ends_one(base, path, outcome, detail):
    with httpx.Client(timeout=10) as http:
        answer = stream.chat(http, "What is 2 + 2?", 4, url=base + path)
    assert (answer.outcome, answer.ok) == (outcome, outcome == "ok") and detail in answer.detail, answer
    assert answer.tokens == (2 if outcome == "ok" else 0)
    assert answer.status == ANSWERS[path][0] and answer.first_s is not None


def test_a_503_is_sent_again_and_counts_only_as_its_last_try_ends(base):
    with httpx.Client(timeout=10) as http:
        assert stream.chat(http, "Hi", 4, url=base + "/busy").status == 503  # no retries asked for
        answer = stream.chat(http, "Hi", 4, retry_503=2, url=base + "/busy")
    assert answer.ok and answer.tries == 2, answer


def test_clients_send_exactly_the_requests_asked_for_between_them():
    seen, lock = [], threading.Lock()

    def ask(http, i):
        with lock:
            seen.append(i)

    for t in stream.clients(4, ask, requests=10):
        t.join()
    assert sorted(seen) == list(range(10))
