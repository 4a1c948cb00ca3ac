"""Scale to zero and back: the tutorial's file with min_replicas 0 gives the engine's memory back when
idle, and a burst of streaming requests after the idle spell brings a replica back and is answered,
every one, while a request without the API key gets 401 at once.

  python -m lab run scale-to-zero [--smoke] [--record]           LLM_PROFILE=cpu-scale-to-zero on the CPU
  python -m lab run scale-to-zero --record --profile rehearsal-fp8-scale-to-zero
                                    the 70B's shape in fp8 on one GPU (an H200 holds it at tensor parallel 1)

The deployment is launched as the notebook launches it, with SERVE_API_KEY set. The first readiness
request already starts the first replica from zero. Then: wait until Serve reports 0 engine replicas
and no engine process is left; a request without the key; a burst of streaming clients, one request
each, the replica count sampled meanwhile; back to 0. Writes scale-to-zero-cpu.json (or
scale-to-zero-70b-<gpu>.json) and its plot; --smoke sends a smaller burst.
"""

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import httpx
import matplotlib
import psutil

from lab import cold_start, stream
from lab.autoscaling import RAY_SESSION, START_MARKS, Load, replicas_now, stamp, timed_lines
from lab.launch import Deployment
from serve_plugins.api_key import KEY_ENV
from tutorial import autoscaling, gpus, ready

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KEY = "scale-to-zero-key"
TO_ZERO_S = 300  # downscale_delay_s 20 (CPU) or 60, Serve's look-back, the engine's shutdown
BURST = {"smoke": 4, "full": 12}  # clients, one streaming request each, sent together after the idle spell
DECIDED = r"Upscaling Deployment\(name='LLMServer[^']*'.* from 0 to 1 replicas"


def engine_processes() -> list[str]:
    """vLLM engine processes still running: what holds the model's memory."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        text = f"{p.info['name']} {' '.join(p.info['cmdline'] or [])}"
        if "EngineCore" in text or "LLMServer" in text:
            found.append(f"{p.pid} {text[:80]}")
    return found


def wait_replicas(want: int, deadline_s: float, timeline: list, t0: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        n = replicas_now()
        timeline.append([round(time.monotonic() - t0, 1), n])
        if n == want and (want or not engine_processes()):
            return round(time.monotonic() - start, 1)
        time.sleep(2)
    return None


def without_key() -> int:
    body = {"model": ready.MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    return httpx.post(f"{ready.BASE_URL}/v1/chat/completions", json=body, timeout=60).status_code


def burst(clients: int, timeline: list, t0: float) -> dict:
    """`clients` streaming requests sent together, each timed to its first chunk; the replica count
    sampled every 2 s until all have ended."""
    load = Load()
    sent = time.time()
    # A timeout that covers a replica's whole start from zero.
    threads = stream.clients(clients, lambda http, _: load.one(http), requests=clients, timeout=1800)
    while any(t.is_alive() for t in threads):
        timeline.append([round(time.monotonic() - t0, 1), replicas_now()])
        time.sleep(2)
    ttfts = sorted(load.ttfts)
    return {"sent_at": sent, "clients": clients, "answered": load.done, "failed": load.failed, "broken": load.broken,
            "first_ttft_s": round(ttfts[0], 1) if ttfts else None, "last_ttft_s": round(ttfts[-1], 1) if ttfts else None}


def phases(logs: Path, sent_at: float, first_ttft_s: float | None) -> dict:
    """From the burst to its first chunk, in phases read from Ray's logs: Serve's decision to go from 0
    to 1 replica, the engine's steps (the same marks as a replica added under load), the first chunk."""
    timed = timed_lines(logs)
    decided = [t for t, line in timed if re.search(DECIDED, line) and t.timestamp() >= sent_at - 5]
    if not decided or first_ttft_s is None:
        return {"decided": bool(decided)}
    out = {"request reaches Serve; Serve decides on a replica": round(min(decided).timestamp() - sent_at, 1)}
    steps, last = cold_start.gaps([line for t, line in timed if t >= min(decided)], START_MARKS, min(decided),
                                   cold_start.local_zone())
    out.update(steps)
    out["HAProxy routes to it; the first chunk"] = round(sent_at + first_ttft_s - last.timestamp(), 1)
    return {"decided": True, "phases_s": out}


def run(profile: str, smoke: bool, log: Path) -> dict:
    on_gpu = not profile.startswith("cpu")
    timeline, t0 = [], time.monotonic()
    os.environ[KEY_ENV] = KEY  # the readiness check sends it too
    try:
        with Deployment("serve_llama_3_1_70b:app", {"LLM_PROFILE": profile, KEY_ENV: KEY}, log,
                        ready_s=1800 if on_gpu else 900) as d:
            logs = RAY_SESSION.resolve() / "logs"
            applied = autoscaling.applied(autoscaling.engine_deployment())
            first_start_s = round(d.ready_after_s, 1)
            idle_to_zero_s = wait_replicas(0, TO_ZERO_S, timeline, t0)
            engines_at_zero = engine_processes()
            status_without_key = without_key()
            shot = burst(BURST["smoke" if smoke else "full"], timeline, t0) if idle_to_zero_s is not None else None
            back_to_zero_s = wait_replicas(0, TO_ZERO_S, timeline, t0) if shot else None
    finally:
        del os.environ[KEY_ENV]
    seen = [n for _, n in timeline if n >= 0]
    return {
        **stamp(profile),
        "min_replicas": applied["min_replicas"], "max_replicas": applied["max_replicas"],
        "downscale_delay_s": applied["downscale_delay_s"],
        "first_start_s": first_start_s, "idle_to_zero_s": idle_to_zero_s, "engines_at_zero": engines_at_zero,
        "status_without_key": status_without_key,
        "burst": {k: v for k, v in (shot or {}).items() if k != "sent_at"},
        "burst_start": phases(logs, shot["sent_at"], shot["first_ttft_s"]) if shot else {"decided": False},
        "back_to_zero_s": back_to_zero_s,
        "replicas_seen": [n for i, n in enumerate(seen) if i == 0 or n != seen[i - 1]],
        "timeline": timeline,
    }


def problems(result: dict) -> list[str]:
    """The run's bars: 1 -> 0 -> 1 -> 0 replicas, no engine left at zero, 401 without the key, every
    request of the burst answered."""
    out = []
    if result["replicas_seen"] != [1, 0, 1, 0]:
        out.append(f"replicas went {result['replicas_seen']}, not [1, 0, 1, 0]")
    if result["engines_at_zero"]:
        out.append(f"engine processes left at 0 replicas: {result['engines_at_zero']}")
    if result["status_without_key"] != 401:
        out.append(f"a request without the key got {result['status_without_key']}, not 401")
    b = result["burst"]
    if not b or b["answered"] != b["clients"]:
        out.append(f"the burst after idle: {b.get('answered')} of {b.get('clients')} answered, "
                   f"failed {b.get('failed')}, broken {b.get('broken')}")
    return out


def results_name(profile: str) -> str:
    return "scale-to-zero-cpu.json" if profile.startswith("cpu") else \
        f"scale-to-zero-70b-{(gpus.node_type() or 'gpu').lower()}.json"


def plot(result: dict, out: Path) -> None:
    points = [p for p in result["timeline"] if p[1] >= 0]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.step([p[0] for p in points], [p[1] for p in points], where="post", color="tab:blue", linewidth=2,
            label="engine replicas running")
    ax.set_yticks(range(result["max_replicas"] + 1))
    ax.set_ylim(-0.1, result["max_replicas"] + 0.4)
    ax.set_xlabel("seconds after the launch began")
    ax.set_ylabel("replicas")
    b = result["burst"]
    ax.set_title(f"{result['model']} on {result['device']}: min_replicas 0\n{b.get('answered')} of "
                 f"{b.get('clients')} requests after idle answered, the first chunk after {b.get('first_ttft_s')} s",
                 fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)


def draw(path: Path) -> None:
    plot(json.loads(path.read_text()), path.with_suffix(".png"))


def main(argv: list[str], results: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help=f"a burst of {BURST['smoke']} requests, not {BURST['full']}")
    p.add_argument("--profile", default="cpu-scale-to-zero", help="LLM_PROFILE of the run")
    args = p.parse_args(argv)
    log = Path(tempfile.mkdtemp(prefix="scale-to-zero-")) / "deployment.log"
    print(f"scale-to-zero: the deployment's log is {log}")
    result = run(args.profile, args.smoke, log)
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=1))
    out = results / results_name(args.profile)
    out.write_text(json.dumps(result, indent=1) + "\n")
    draw(out)
    print(f"wrote {out} and its plot")
    if missed := problems(result):
        print("scale-to-zero: the run missed its bars:\n  " + "\n  ".join(missed))
        return 1
    return 0
