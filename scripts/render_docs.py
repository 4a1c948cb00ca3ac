"""Regenerate the report pages in docs/ from the results files; --check only reports a difference.

  python -m scripts.render_docs          write docs/benchmark.md, docs/reliability.md and docs/rehearsal.md
  python -m scripts.render_docs --check  exit 1 when a page differs from a fresh render

Every figure on a page is printed from its results file, so a page cannot drift from the run it
reports; the prose around the figures says what they mean.
"""

import json
import sys
from pathlib import Path

import capacity
from benchmarks.bench_plot import table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOCS = ROOT / "docs"
BANNER = "<!-- Generated from {source} by scripts/render_docs.py; do not edit by hand. Rerun: python -m scripts.render_docs -->\n\n"
# Why each variable of the high-throughput mode (benchmarks/bench.py's "tuned" config) is there.
TUNED_REASONS = {
    "RAY_SERVE_ENABLE_HA_PROXY": "HAProxy replaces Serve's Python HTTP proxy; direct streaming needs it.",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "gRPC between replicas, user code on the replica's own event loop, "
                                      "buffered request logs.",
    "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "the `LLMServer` replica becomes the HTTP ingress, so no token passes "
                                             "through an `OpenAiIngress` replica. It serves one model per application.",
    "RAY_SERVE_HAPROXY_MAXCONN": "HAProxy asks for about 2.5 file descriptors per allowed connection; its default of "
                                 "20,000 connections failed to start on a machine limited to 20,000 open files.",
}


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _runs(bench: dict) -> dict:
    return {(r["model"], r["config"], r["concurrency"]): r for r in bench["runs"]}


def _ratio(runs: dict, model: str, config: str, c: int) -> float:
    return runs[model, config, c]["output_throughput"] / runs[model, "vllm", c]["output_throughput"]


def benchmark_page(bench: dict) -> str:
    runs, load = _runs(bench), bench["load"]
    levels = load["concurrency"]
    ttft_gap = runs["smollm2", "default", 1]["median_ttft_ms"] - runs["smollm2", "vllm", 1]["median_ttft_ms"]
    tuned_8b = [_ratio(runs, "8b", "tuned", c) for c in levels]
    default_small = {c: _ratio(runs, "smollm2", "default", c) for c in levels}
    tuned_small = {c: _ratio(runs, "smollm2", "tuned", c) for c in levels}
    ref = bench["reference_8b_default"]
    ref_text = ", ".join(f"{r['output_throughput_ray'] / r['output_throughput_vllm']:.2f}x at {r['concurrency']}"
                         for r in ref["runs"])
    ref_ttft = ref["runs"][0]["median_ttft_ms_ray"] - ref["runs"][0]["median_ttft_ms_vllm"]
    profile = runs.get(("8b", "tuned", 64), {}).get("profile_top", [])
    top = "; ".join(f"`{frame.split(' (')[0]}` {share}%" for frame, share in profile[:6] if frame)
    env = "\n".join(f"export {k}={v}" for k, v in bench["ray_configs"]["tuned"].items())
    reasons = "\n".join(f"- `{k}={v}`: {TUNED_REASONS[k]}" for k, v in bench["ray_configs"]["tuned"].items())
    return f"""# How fast: Ray Serve LLM against plain vLLM

Ray Serve adds routing, autoscaling and an OpenAI layer in front of the same vLLM engine that `vllm serve` runs on
its own. [`benchmarks/bench.py`](../benchmarks/bench.py) measures what that costs on one machine: it starts plain vLLM's OpenAI server,
then the tutorial's deployment with identical engine arguments, and drives each with vLLM's own load generator
(`vllm bench serve`: {load['dataset']} prompts of {load['input_len']} tokens, {load['output_len']} output tokens,
`ignore_eos`, seed {load['seed']}) at {", ".join(map(str, levels))} concurrent requests.

This run: {bench['device']}, Ray {bench['ray_version']}, vLLM {bench['vllm_version']}, {bench['date']}; the small model
with its real weights (`smollm2`) and a model of Llama 3.1 8B's shape with random weights (`8b`). `default` is the
deployment as the tutorial writes it; `tuned` is Ray Serve LLM's high-throughput mode.

![Output throughput and TTFT of plain vLLM and Ray Serve LLM](results/bench-h100.png)

Output throughput as a share of vLLM's, and median time to first token (TTFT):

{table(bench)}

The `default` run of the 8B shape is not in this file; an earlier run ({ref['source'].removeprefix("an earlier measurement: ")}) gave {ref_text} clients,
with a TTFT {ref_ttft:.0f} ms above vLLM's at one client.

## What the numbers say

- **Time to first token.** As the tutorial deploys it, Ray Serve LLM answered the first token {ttft_gap:.0f} ms later
  than vLLM with one client on the small model. Ray Serve LLM's `LLMServer` batches streamed chunks every
  `stream_batching_interval_ms` (50 ms by default) to save messages between Ray actors, and the first chunk waits for
  the first tick too (upstream: ray-project/ray#59681).
- **Throughput under load.** Each streamed chunk crosses three processes (Serve's HTTP proxy, the `OpenAiIngress`
  replica, the `LLMServer` replica), so `default` falls further behind as concurrency grows: on the small model
  {default_small[levels[0]]:.2f}x of vLLM at {levels[0]} client and {default_small[levels[-2]]:.2f}x and
  {default_small[levels[-1]]:.2f}x at {levels[-2]} and {levels[-1]}.
- **The tuned mode removes the hops.** With HAProxy in front, direct streaming makes the `LLMServer` replica serve
  vLLM's own OpenAI app, so tokens go engine, replica, HAProxy, client. On the 8B shape it gave {min(tuned_8b):.2f}x to
  {max(tuned_8b):.2f}x of vLLM's throughput across the concurrencies. A py-spy profile of the replica at 64 clients:
  {top or "not recorded"}.
- **Where it does not close the gap.** On the 135M model, whose decode steps are short, the tuned mode gave
  {tuned_small[levels[0]]:.2f}x and {tuned_small[levels[1]]:.2f}x of vLLM at {levels[0]} and {levels[1]} clients: a fixed
  cost per token in the replica's path is large against a short step. Real 70B steps are longer still.

## The tuned mode

Four environment variables, set before `ray start` on every node so that Ray's processes inherit them:

```bash
{env}
```

{reasons}

The `LLMConfig` stays as it is. Ray marks direct streaming experimental, and in this mode Serve reports the
application at `http://0.0.0.0:8000`, all interfaces rather than loopback, so keep port 8000 behind a firewall. The
tutorial's own cells keep the default mode.

## Measure your own machine

`python -m benchmarks.bench` runs the whole comparison on a GPU node and writes `docs/results/bench-h100.json` and its plot;
`python -m benchmarks.bench --smoke` runs a reduced sweep on a CPU (the test suite runs it, asserting that no request failed).
"""


def reliability_page(rel: dict) -> str:
    bad = "\n".join(f"| {b['input']} | {b['status']} | {b['message'][:100].replace('|', '/')} |" for b in rel["bad_inputs"])
    faults = "\n".join(
        f"| {f['fault']} | {f['recovery_s']} s | {f['failed_during']} of {f['requests_during']} "
        f"({', '.join(f'{n} x {s}' for s, n in f['failed_during_by_status'].items()) or 'none'}) | "
        f"{f['succeeded_after_recovery']} of 5 |" for f in rel["faults"])
    load, stream, prom = rel["load"], rel["stream_disconnect"], rel["prometheus"]
    recovery = sorted(f["recovery_s"] for f in rel["faults"])
    return f"""# What it survives

A deployment that answers one polite request is not yet one you can operate.
[`tests/test_reliability.py`](../tests/test_reliability.py) starts the tutorial's own deployment (the small model on
the CPU, with the key check on) and puts it through what production traffic brings. This run: {rel['model']} on
{rel['cpus']} CPU cores, Ray {rel['ray_version']}, vLLM {rel['vllm_version']}, {rel['date']}.

## Bad input

{rel['bad_inputs_tried']} malformed or out-of-range requests, each followed by a valid one that had to be answered:
{rel['bad_inputs_clear_4xx']} got a `4xx` with a message that names the problem, and the server
{"answered the next request every time" if rel['server_alive_after'] else "stopped answering after one of them"}.

| bad input | HTTP | error message (first 100 characters) |
|---|---|---|
{bad}

The messages come from three layers: Serve's OpenAI ingress validates the JSON against the API's schema
(`Invalid request format: ...`), vLLM checks values against the model (`max_tokens`, the context length, `n`), and
Starlette rejects bytes that are not UTF-8.

## A client that leaves mid-stream

A streaming request for 1,500 tokens was dropped once it held KV cache: the engine generated
{stream['tokens_generated_of_1500']:.0f} of them, and its KV cache was {"freed" if stream['kv_cache_freed'] else "not freed"}.
Serve cancels the request and vLLM stops, so abandoned streams do not eat the concurrency the KV cache allows.

## Load

{load['clients']} streaming clients sent {load['requests']} requests: {load['failed']} failed, {load['retried_503']} were
retried after a `503`; latency p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, {load['seconds']} s in all. Requests
beyond what the engine runs at once wait in Serve's and vLLM's queues, so overload shows as latency, not errors.

## Faults

Each process was killed with SIGKILL while four clients kept sending:

| what was killed | answering again after | requests sent meanwhile that failed | requests after recovery answered |
|---|---|---|---|
{faults}

Serve replaces what dies, but not instantly: {recovery[0]} to {recovery[-1]} s here, with the small model on a CPU; a 70B
replica must load 140 GB of weights again, which takes minutes. Keep `min_replicas` at 2 or more where that matters,
so another replica serves meanwhile, and let clients retry failed requests with backoff.

## Metrics

The engine's metrics reached Ray's Prometheus endpoint and a real Prometheus server ({prom['version']}, `up`
{prom['up']:.0f}) stored the same counts: {prom['stored']['ray_vllm_time_to_first_token_seconds_count']:.0f} requests
timed to the first token, {prom['stored']['ray_vllm_prompt_tokens_total']:.0f} prompt and
{prom['stored']['ray_vllm_generation_tokens_total']:.0f} generated tokens.
"""


def _case_row(c: dict) -> str:
    mode = "eager" if c["enforce_eager"] else "compiled"
    return (f"| 2 x {c['gpu']}, {c['weight_dtype']} weights, {c['max_model_len']:,} tokens, {mode} | "
            f"{c['vllm_kv_tokens']:,} tokens ({c['vllm_max_concurrency']:g}x) | {c['planner_kv_tokens']:,} | "
            f"{c['error_pct']:+.2f}% |")


def rehearsal_page(h200: dict, h100: dict, bench: dict) -> str:
    up, mem, h100_up = h200["startup_s"], h200["memory_per_gpu_gib"], h100["startup_s"]
    (case,) = h200["cases"]
    plan = capacity.plan(str(ROOT / "tests/fixtures/data/llama-3.1-70b-vocab49152.json"), case["gpu"],
                         tensor_parallel_size=case["tensor_parallel_size"], max_model_len=case["max_model_len"],
                         weight_dtype=case["weight_dtype"], enforce_eager=case["enforce_eager"])
    held = plan.other_gib_per_gpu - mem["peak_activation"] - mem["non_torch"]
    a100 = capacity.plan("llama-3.1-70b", "A100-40G", tensor_parallel_size=8, max_model_len=32768)
    nccl = capacity.NON_TORCH_PER_PEER_GIB * 7
    gaps = [c for c in h100["cases"] if c.get("open_gap")]
    runs = bench["runs"]
    return f"""# Rehearsing the 70B on two GPUs

`LLM_PROFILE=rehearsal-fp8` runs the tutorial with the 70B's real architecture and random weights in fp8, sharded over
the node's GPUs (tensor parallel 2 here). This page reports two runs of the notebook under nbmake:
[`docs/results/tp2-h200x2.json`](results/tp2-h200x2.json) ({h200['gpu_count']} x {h200['gpu_name']}, Ray
{h200['ray_version']}, vLLM {h200['vllm_version']}, {h200['date']}: {"passed" if h200['notebook']['passed'] else "failed"}) and
[`docs/results/tp2-h100x2.json`](results/tp2-h100x2.json) ({h100['gpu_count']} x {h100['gpu_name']},
{h100['date']}: {"passed" if h100['notebook']['passed'] else "failed"}, see *A failure worth knowing*).

## The planner against vLLM's KV cache

| TP 2 | vLLM's KV cache | planner | planner error |
|---|---|---|---|
{chr(10).join(_case_row(c) for c in h200["cases"] + h100["cases"])}

{" ".join(c["open_gap"] for c in gaps)}

## Time to ready, and where it goes

{up['total']:.0f} s from `serve run` to the first answer on the H200s: {up['serve_run_to_replica_started']} s until Serve
had started its proxy and both replicas, {up['engine_config_and_process_start']} s for the engine replica to resolve
vLLM's config and start the engine process, {up['engine_to_workers_and_nccl']} s for one worker per GPU to start,
import vLLM and connect to the other through NCCL, {up['weight_load_dummy']} s to create the random weights,
{up['kv_cache_and_warmup']:.0f} s to profile memory, allocate the KV cache and warm up, and
{up['engine_started_to_ready']} s until Serve marked the application ready. Real weights are 141 GB to read from disk or
the network: that is the part that grows, to minutes. Eager mode skips `torch.compile` and CUDA graph capture;
`torch.compile` alone took {h100_up['torch_compile']:.0f} s on the H100s.

## Memory per GPU

vLLM logs its own split on each GPU: {mem['weights']} GiB of fp8 weights (the planner: {plan.weights_gib_per_gpu}),
{mem['peak_activation']} GiB of peak activations, {mem['non_torch']} GiB outside PyTorch, {mem['cuda_graphs']:g} GiB of
CUDA graphs, and {mem['kv_cache']} GiB of KV cache. The planner holds back {plan.other_gib_per_gpu} GiB per GPU for all
of it but weights and KV cache, {held:.2f} GiB more than vLLM used here, mostly its allowance for NCCL
({capacity.NON_TORCH_PER_PEER_GIB} GiB per peer, calibrated on the source's TP 8 log line from an older vLLM).

## Speed at tensor parallel 2

[`benchmarks/bench.py`](../benchmarks/bench.py) `--models 70b-fp8` ran plain vLLM and the tutorial's deployment with the same engine
arguments on the two H200s ([`docs/results/bench-tp2-h200x2.json`](results/bench-tp2-h200x2.json)); all
{sum(r['completed'] for r in runs)} requests completed, {sum(r['failed'] for r in runs)} failed:

{table(bench)}

At 64 clients the gap is the configuration, not Ray: `max_ongoing_requests=48` admits 48 requests to a replica and
queues the rest in Serve. In production the autoscaler adds a replica for them; this node had no GPUs left for one.

## A failure worth knowing

With fp8 weights, vLLM 0.26 crashed while capturing CUDA graphs on the H100s (`CUDA error: an illegal memory access`
in a compiled fp8 quantization kernel, on both GPUs). Serve restarted the replica, the notebook's wait ran out at its
deadline and printed the worker's error, and after the shutdown both GPUs showed 0 MiB in use. The same engine
arguments crashed the same way in plain `vllm serve`, and ran in eager mode, so `rehearsal-fp8` sets
`enforce_eager=True`. Try the same (or a newer vLLM) if a real fp8 checkpoint fails this way.

## What to expect on 8 x A100-40G

There each GPU holds {a100.weights_gib_per_gpu} GiB of bf16 weights and {a100.kv_cache_gib_per_gpu} GiB of KV cache:
the planner says {a100.max_concurrency}x at 32,768 tokens, where the source's log (an older vLLM) says 13.02x. Of the
{a100.other_gib_per_gpu} GiB per GPU the planner holds back, {nccl:.2f} GiB is NCCL's share for seven peers; if vLLM
0.26 counts as little outside PyTorch at TP 8 as it did at TP 2, the KV cache comes out larger. Plan on the smaller
figure, and read the real one from vLLM's log before promising more.
"""


PAGES = {
    "benchmark.md": ("docs/results/bench-h100.json", lambda: benchmark_page(_load("bench-h100.json"))),
    "reliability.md": ("docs/results/reliability-cpu.json", lambda: reliability_page(_load("reliability-cpu.json"))),
    "rehearsal.md": ("docs/results/tp2-h200x2.json, tp2-h100x2.json and bench-tp2-h200x2.json",
                     lambda: rehearsal_page(_load("tp2-h200x2.json"), _load("tp2-h100x2.json"),
                                            _load("bench-tp2-h200x2.json"))),
}


def main(argv: list[str]) -> int:
    stale = []
    for name, (source, render) in PAGES.items():
        text = BANNER.format(source=source) + render()
        path = DOCS / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    for name in stale:
        print(f"docs/{name} is out of date: run python -m scripts.render_docs")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
