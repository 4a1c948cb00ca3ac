"""Regenerate the report pages in docs/ from the results files; --check only reports a difference.

  python -m scripts.render_docs          write the report pages in docs/ (PAGES below)
  python -m scripts.render_docs --check  exit 1 when a page differs from a fresh render

Every figure on a page is printed from its results file, so a page cannot drift from the run it
reports; the prose around the figures says what they mean.
"""

import json
import sys
from pathlib import Path

import capacity
from benchmarks import cold_start
from benchmarks.bench_plot import table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOCS = ROOT / "docs"
BANNER = "<!-- Generated from {source} by scripts/render_docs.py; do not edit by hand. Rerun: python -m scripts.render_docs -->\n\n"
# Why each variable of the high-throughput mode (the notebook's launch, tutorial/facts.py) is there.
MODE_REASONS = {
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


def _server(bench: dict, config: str) -> dict:
    """The one server entry of a benchmark run that deployed `config`."""
    (server,) = [s for s in bench["servers"] if s["config"] == config]
    return server


def stream_section(stream: dict) -> str:
    """The tutorial's deployment with stream_batching_interval_ms 0 against vLLM, and the 50 ms levels beside it."""
    runs = _runs(stream)
    levels = stream["load"]["concurrency"]
    server = _server(stream, "stream-0")
    fifty = {r["concurrency"]: r for r in stream["interval_50"]["runs"]}
    rows = []
    for c in levels:
        vllm, zero, at50 = runs["8b", "vllm", c], runs["8b", "stream-0", c], fifty.get(c)
        rows.append(f"| {c} | {vllm['output_throughput']:.0f} | {zero['output_throughput'] / vllm['output_throughput']:.2f} | "
                    + (f"{at50['output_throughput'] / vllm['output_throughput']:.2f}" if at50 else "-")
                    + f" | {vllm['median_ttft_ms']:.1f} | {zero['median_ttft_ms']:.1f} | "
                    + (f"{at50['median_ttft_ms']:.1f}" if at50 else "-") + " |")
    one = levels[0]
    gap0 = runs["8b", "stream-0", one]["median_ttft_ms"] - runs["8b", "vllm", one]["median_ttft_ms"]
    gap50 = fifty[one]["median_ttft_ms"] - runs["8b", "vllm", one]["median_ttft_ms"]
    worst = min(levels, key=lambda c: _ratio(runs, "8b", "stream-0", c))
    tpot = {k: runs["8b", k, 64]["median_tpot_ms"] for k in ("vllm", "stream-0")}
    stalled = stream["interval_50"]["stalled_at_concurrency"]
    return f"""In the default mode, `experimental_configs={{"stream_batching_interval_ms": 0}}` makes the `LLMServer` replica pass on
every chunk as vLLM makes it. [`benchmarks/bench.py`](../benchmarks/bench.py) `--ray-configs stream-0` deploys the
tutorial's file in that mode with that setting and asks the running replica which interval it uses (here {server['stream_batching_interval_ms']:g} ms):
a setting that Ray renamed or dropped would show as Ray's default and stop the run. {stream['device']}, Ray
{stream['ray_version']}, vLLM {stream['vllm_version']}, {stream['date']}, the 8B shape, the load above, plain vLLM on the
same machine:

![Plain vLLM against the tutorial's deployment streaming every chunk at once](results/bench-stream-h100.png)

| clients | vLLM tok/s | 0 ms / vLLM | 50 ms / vLLM | TTFT ms: vLLM | 0 ms | 50 ms |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

At one client the first token came {gap0:.1f} ms after vLLM's with 0 ms, against {gap50:.1f} ms with Ray's 50 ms. Under
load it costs: every token becomes one message through the ingress replica and Serve's proxy, the time per output
token at 64 clients went from {tpot['vllm']:.1f} ms (vLLM) to {tpot['stream-0']:.1f} ms, and throughput fell to
{_ratio(runs, "8b", "stream-0", worst):.2f}x of vLLM's at {worst} clients. So the default mode has no interval that
keeps both, and the tutorial runs the high-throughput mode instead. The 50 ms run (both with up to {stream['interval_50']['max_ongoing_requests']} requests per replica) stalled at
{stalled} clients: that level had not finished after 4 minutes when the machine had to be given up, and why is not known.
Sending the first chunk at once and batching the rest (ray-project/ray#64534, not in Ray {stream['ray_version']}) would
keep both."""


def benchmark_page(bench: dict, cap32: dict, cap256: dict, modes: dict, stream: dict) -> str:
    runs, load = _runs(bench), bench["load"]
    levels = load["concurrency"]
    server = _server(bench, "tutorial")
    ratios = {c: _ratio(runs, "8b", "tutorial", c) for c in levels}
    met = [c for c in levels if ratios[c] >= 0.95]
    missed = [c for c in levels if ratios[c] < 0.95]
    one, top = levels[0], levels[-1]
    ttft_gap = runs["8b", "tutorial", one]["median_ttft_ms"] - runs["8b", "vllm", one]["median_ttft_ms"]
    at_top = {k: runs["8b", k, top] for k in ("vllm", "tutorial")}
    capped = _runs(cap32)
    capped_server = _server(cap32, "tutorial")
    capped_text = ", ".join(f"{_ratio(capped, '8b', 'tutorial', c):.2f}x at {c}" for c in levels[-2:])
    even = _runs(cap256)
    even_top = {k: even["8b", k, top] for k in ("vllm", "tutorial")}
    even_server = _server(cap256, "tutorial")
    mode_runs = _runs(modes)
    ttft_default = mode_runs["smollm2", "default", 1]["median_ttft_ms"] - mode_runs["smollm2", "vllm", 1]["median_ttft_ms"]
    default_small = {c: _ratio(mode_runs, "smollm2", "default", c) for c in levels}
    tuned_small = {c: _ratio(mode_runs, "smollm2", "tuned", c) for c in levels}
    ref = modes["reference_8b_default"]
    ref_text = ", ".join(f"{r['output_throughput_ray'] / r['output_throughput_vllm']:.2f}x at {r['concurrency']}"
                         for r in ref["runs"])
    ref_ttft = ref["runs"][0]["median_ttft_ms_ray"] - ref["runs"][0]["median_ttft_ms_vllm"]
    env = "\n".join(f"export {k}={v}" for k, v in bench["ray_configs"]["tutorial"].items())
    reasons = "\n".join(f"- `{k}={v}`: {MODE_REASONS[k]}" for k, v in bench["ray_configs"]["tutorial"].items())
    return f"""# How fast: Ray Serve LLM against plain vLLM

Ray Serve adds routing, autoscaling and an OpenAI layer in front of the same vLLM engine that `vllm serve` runs on
its own. [`benchmarks/bench.py`](../benchmarks/bench.py) measures what that costs on one machine: it starts plain vLLM's OpenAI server,
then the tutorial's deployment with identical engine arguments, and drives each with vLLM's own load generator
(`vllm bench serve`: {load['dataset']} prompts of {load['input_len']} tokens, {load['output_len']} output tokens,
`ignore_eos`, seed {load['seed']}) at {", ".join(map(str, levels))} concurrent requests.

## As the tutorial deploys it

This run: {bench['device']}, Ray {bench['ray_version']}, vLLM {bench['vllm_version']}, {bench['date']}; a model of Llama 3.1
8B's shape with random weights, plain vLLM and the tutorial's deployment on the same machine, one after the other. `tutorial` is the
deployment as the notebook starts it, in Ray Serve LLM's high-throughput mode. The benchmark reads the mode back from
the running deployment, so a switch that Ray renamed or dropped stops the run: port 8000 was served by
`{", ".join(server['mode']['http_server'])}`, and the application's deployments were {" and ".join(f"`{d}`" for d in server['mode']['deployments'])},
with no `OpenAiIngress` replica in the path. Each replica took up to {server['max_ongoing_requests']} requests at once, twice the
sweep's most clients: the tutorial sizes `max_ongoing_requests` to what the KV cache holds, and with vLLM's own KV
sizing on an H100 the 8B shape holds every client of the sweep (why twice: below).

![Output throughput and TTFT of plain vLLM and the tutorial's deployment](results/bench-h100.png)

Output throughput as a share of vLLM's, and median time to first token (TTFT):

{table(bench)}

- **Time to first token**: {ttft_gap:+.1f} ms against vLLM at {one} client.
- **Throughput**: {", ".join(f"{ratios[c]:.2f}x" for c in met)} of vLLM's at {", ".join(map(str, met))} clients, no request failed.
- **Below 0.95x**: {", ".join(f"{ratios[c]:.2f}x at {c} clients" for c in missed) or "nothing"}. At {top} clients the median
  first token came after {at_top['tutorial']['median_ttft_ms']:.0f} ms against vLLM's {at_top['vllm']['median_ttft_ms']:.0f} ms,
  while the time per output token was {at_top['tutorial']['median_tpot_ms']:.1f} ms against {at_top['vllm']['median_tpot_ms']:.1f} ms.
- **The replica's limit decides the high end.** With exactly one slot per client
  ({top} clients, `max_ongoing_requests` {even_server['max_ongoing_requests']}, an earlier run on another H100,
  [`bench-cap256-h100.json`](results/bench-cap256-h100.json)), the deployment reached only {_ratio(even, '8b', 'tutorial', top):.2f}x at {top}
  clients, with a median first token after {even_top['tutorial']['median_ttft_ms']:.0f} ms against vLLM's
  {even_top['vllm']['median_ttft_ms']:.0f} ms; with twice the slots, {ratios[top]:.2f}x above. Our reading of the two runs (on
  different machines; not traced further): a client's next request reaches the router before the slot of its last one
  is free again, and waits for it. With the `gpu` profile's {capped_server['max_ongoing_requests']} requests per replica
  ([`bench-cap32-h100.json`](results/bench-cap32-h100.json)): {capped_text} clients, the rest waiting in Ray's queue.
  Size `max_ongoing_requests` to what the KV cache holds (`python capacity.py`), as the 70B's config does, with room
  above the clients you expect, or requests queue in Ray that the engine had room for.

![The same sweep with one slot per client](results/bench-cap256-h100.png)

![The same sweep with the gpu profile's 32 requests per replica](results/bench-cap32-h100.png)

The mode is four environment variables, set before `ray start` on every node so that Ray's processes inherit them,
and before `serve run`:

```bash
{env}
```

{reasons}

The `LLMConfig` stays as it is, and Ray marks direct streaming experimental. HAProxy forwards each request to a
replica's own HTTP server; Serve runs the same API key check there (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`), and
`serve start --http-host 127.0.0.1` keeps HAProxy and the replicas on loopback: without it the mode listens on every
interface.

## Ray Serve's default mode

Without those variables, Serve's Python proxy and an `OpenAiIngress` replica sit between the client and the engine's
replica. An earlier run on the same H100 type ({modes['date']}, Ray {modes['ray_version']}, vLLM {modes['vllm_version']},
[`bench-modes-h100.json`](results/bench-modes-h100.json)) measured both modes, `default` and `tuned` (the mode above):

![Ray Serve's two modes against plain vLLM](results/bench-modes-h100.png)

{table(modes)}

An earlier run of the 8B shape in the default mode ({ref['source'].removeprefix("an earlier measurement: ")}) gave {ref_text}
clients, with a TTFT {ref_ttft:.0f} ms above vLLM's at one client.

- **Time to first token.** In the default mode the first token came {ttft_default:.0f} ms after vLLM's with one client on
  the small model. The `LLMServer` replica batches streamed chunks every `stream_batching_interval_ms` (50 ms by
  default) to save messages between Ray actors, and the first chunk waits for the first tick too (upstream:
  ray-project/ray#59681). In the high-throughput mode the replica serves vLLM's own OpenAI app, and no batching applies.
- **Throughput under load.** Each streamed chunk crosses three processes (Serve's HTTP proxy, the `OpenAiIngress`
  replica, the `LLMServer` replica), so the default mode falls further behind as concurrency grows: on the small model
  {default_small[levels[0]]:.2f}x of vLLM at {levels[0]} client and {default_small[levels[-2]]:.2f}x and
  {default_small[levels[-1]]:.2f}x at {levels[-2]} and {levels[-1]}.
- **Where the high-throughput mode does not close the gap.** On the 135M model, whose decode steps are short, it gave
  {tuned_small[levels[0]]:.2f}x and {tuned_small[levels[1]]:.2f}x of vLLM at {levels[0]} and {levels[1]} clients: a fixed
  cost per token in the replica's path is large against a short step. Real 70B steps are longer still.

## Streaming each chunk at once

{stream_section(stream)}

## Measure your own machine

`python -m benchmarks.bench` runs the comparison on a GPU node (`--ray-configs tutorial python-proxy` by default, the
second being Ray Serve's default mode) and writes `docs/results/bench-h100.json` and its plot;
`python -m benchmarks.bench --smoke` runs a reduced sweep on a CPU (the test suite runs it, asserting that no request
failed and that each mode was the one asked for).
"""


def reliability_page(rel: dict) -> str:
    # One table row each: the message on one line, at most 100 characters.
    bad = "\n".join(f"| {b['input']} | {b['status']} | {' '.join(b['message'].split())[:100].replace('|', '/')} |"
                    for b in rel["bad_inputs"])
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

The messages come from vLLM's own OpenAI server, which the engine's replica runs in the high-throughput mode: it
validates the JSON against the API's schema (`1 validation error: ...`), checks values against the model
(`max_tokens`, the context length, `n`) and names an unknown model; Starlette rejects bytes that are not UTF-8.

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


def security_page(sec: dict) -> str:
    def shown(v) -> str:
        return f"`{v}`" if isinstance(v, int) else str(v)

    ports = "\n".join(f"| {port} | {s['process']} | {shown(s['GET /'])} | {shown(s.get('chat', ''))} |"
                       for port, s in sec["outside_address"].items())
    abuse = "\n".join(f"| {a['case']} | {a['status'] if isinstance(a['status'], int) else json.dumps(a['status'])} | "
                       f"{'yes' if a['alive_after'] else '**no**'} |" for a in sec["abuse"])
    answering = [p for p, s in sec["outside_address"].items() if isinstance(s["GET /"], int) and s["GET /"] != 401]
    guarded = [p for p, s in sec["outside_address"].items() if s["GET /"] == 401]
    idle, slow, killed, token = sec["idle_connections"], sec["slow_client"], sec["haproxy_killed"], sec["token_files"]
    return f"""# What it leaks, and who else can drive it

[`tests/test_reliability.py`](../tests/test_reliability.py) starts the deployment as the notebook does (the small model on
the CPU, `SERVE_API_KEY` set, Ray's token auth, a fake `HF_TOKEN` exported as the 70B path tells the reader to) and looks
for what another machine, another local account or a hostile client can do. This run: {sec['model']} on {sec['cpus']}
CPU cores, Ray {sec['ray_version']}, vLLM {sec['vllm_version']}, {sec['date']}.

## The Hugging Face token

The engine inherits it from the environment of `ray start`; the config never holds it. Of {token['files_read']} files
(Ray's session folder, `docs/`, the notebooks) {token['holding_the_token']} held it, and of the process command lines
sampled {sec['token_cmdlines']['samples']} times while the application deployed, {sec['token_cmdlines']['holding_the_token']}
did.

## Another local account

HAProxy's admin socket, config and state live in `/tmp/haproxy-serve-UID`, mode 700. The owner's `show info` answers;
as `nobody` the socket was: {sec['admin_socket_other_user']}. A stale teardown record whose session id now belongs to
an unrelated `setsid sleep` was dropped and the sleep spared ({'yes' if sec['stale_record_spared']['stranger_alive'] else '**no**'},
{sec['stale_record_spared']['entries']} kinds of stale entry).

## Another machine

Every port the deployment's processes listen on, reached from this host's own non-loopback address: what `GET /`
answered, and what a chat completion without a key got where HTTP answered ("no HTTP answer": gRPC, which the cluster
token guards).

| port | process | GET / | chat completion |
|---|---|---|---|
{ports}

Port 8000, the dashboard and the replicas' own HTTP ports listen on loopback only. Ray's agents on
{", ".join(guarded)} ask for the cluster token (`401`). What else answers from outside ({", ".join(answering)}) is
metrics: Ray's exporters, and HAProxy's statistics page and Prometheus endpoint. Ray writes
their addresses itself (`bind *:8404`, `bind :9101` in its HAProxy template, every interface for its metrics
exporters) and offers no setting for them, so the notebook says to close them with a firewall on a machine others can
reach. None of them served the model.

## Held connections

HAProxy's statistics and metrics frontends share HAProxy's one connection limit ({idle['limit']:,}) with port 8000.
{idle['held']:,} idle connections held to 8404 and 9101: port 8000
{"still answered" if idle['port_8000_answered_while_held'] else "**stopped answering**"} while they were held, and
{"answered again" if idle['answered_after_release'] else "did not answer"} once they closed. Ray's template sets no
per-frontend limit and takes none from the environment; until it does, a firewall in front of 8404 and 9101 is the
protection (the test is marked as a known failure, and fails loudly once Ray fixes it).

A client that trickled its headers one byte a second for 30 s held its one connection ({slow['status']}), and
{slow['answered']} of the {slow['valid_requests_meanwhile']} valid requests sent meanwhile were answered.

## Abuse

Each case was followed by a valid request that had to be answered; `4xx` is a clear refusal, `200` a request
that vLLM accepts and `max_tokens` bounds.

| case | HTTP | answered the next request |
|---|---|---|
{abuse}

A JSON schema that refers to itself gets `500` from vLLM instead of a `4xx`; the server keeps serving. HAProxy killed
with SIGKILL under four streaming clients: Serve's health check restarted it, and port 8000 answered again after
{killed['back_after_s']} s; {killed['failed_during']} of {killed['requests_during']} requests sent meanwhile failed,
so clients should retry.
"""


def _case_row(c: dict) -> str:
    mode = "eager" if c["enforce_eager"] else "compiled"
    return (f"| {c['tensor_parallel_size']} x {c['gpu']}, {c['weight_dtype']} weights, {c['max_model_len']:,} tokens, {mode} | "
            f"{c['vllm_kv_tokens']:,} tokens ({c['vllm_max_concurrency']:g}x) | {c['planner_kv_tokens']:,} | "
            f"{c['error_pct']:+.2f}% |")


def _ttft_row(runs: dict, c: int) -> str:
    ray, vllm = runs["70b", "tutorial", c], runs["70b", "vllm", c]
    return (f"| {c} | {vllm['output_throughput']:.0f} | {ray['output_throughput']:.0f} | "
            f"{ray['output_throughput'] / vllm['output_throughput']:.3f} | {vllm['median_ttft_ms']:.1f} / "
            f"{ray['median_ttft_ms']:.1f} ({ray['median_ttft_ms'] / vllm['median_ttft_ms'] - 1:+.0%}) | "
            f"{vllm['median_tpot_ms']:.1f} / {ray['median_tpot_ms']:.1f} |")


def rehearsal_page(tp4: dict, graphs: dict, bench4: dict, validation: dict, h200: dict, h100: dict, bench: dict) -> str:
    up = h200["startup_s"]
    shape = [c for c in validation["cases"] if c["model"] == "llama-3.1-70b-vocab49152"]
    (compiled,) = [c for c in shape if c["tensor_parallel_size"] == 4 and not c["enforce_eager"]]
    mem = compiled["vllm_memory_per_gpu"]
    plan = capacity.plan(str(ROOT / "tests/fixtures/data/llama-3.1-70b-vocab49152.json"), compiled["gpu"],
                         tensor_parallel_size=4, max_model_len=compiled["max_model_len"])
    a100 = capacity.plan("llama-3.1-70b", "A100-40G", tensor_parallel_size=8, max_model_len=32768)
    runs4 = _runs(bench4)
    levels = bench4["load"]["concurrency"]
    ratios = [_ratio(runs4, "70b", "tutorial", c) for c in levels]
    settings = tp4["engine_settings"]
    kv_gib = next(line.split("Available KV cache memory: ")[1].split()[0] for line in tp4["engine"]
                  if "Available KV cache memory" in line)
    small = graphs["runs"]
    runs = bench["runs"]
    return f"""# Rehearsing the 70B on the GPUs of one node

`LLM_PROFILE=rehearsal` runs the tutorial with the 70B's real architecture and random weights in bf16, sharded over
every GPU of the node; `rehearsal-fp8` stores the weights in fp8. This page reports the runs of the notebook under
nbmake and what was measured beside them. On a node of four GPUs, [`ci/tp4.sh`](../ci/tp4.sh) reruns the four-GPU
runs: the graph-capture check, the notebook, the planner's eager case and the benchmark.

- [`docs/results/tp4-h200x4.json`](results/tp4-h200x4.json): {tp4['gpu_count']} x {tp4['gpu_name']}, `rehearsal` at
  {compiled['max_model_len']:,} tokens, tensor parallel {settings['tensor_parallel_size']}, CUDA graphs
  (`{settings['cudagraph_mode']}`), Ray {tp4['ray_version']}, vLLM {tp4['vllm_version']}, {tp4['date']}:
  {"passed" if tp4['passed'] else "failed"}, ready {tp4['time_to_ready_s']:.0f} s after `serve run`. Its executed notebook
  is [`tp4-h200x4.ipynb`](results/tp4-h200x4.ipynb).
- [`docs/results/tp2-h200x2.json`](results/tp2-h200x2.json): {h200['gpu_count']} x {h200['gpu_name']},
  `rehearsal-fp8`, eager, {h200['date']}: {"passed" if h200['notebook']['passed'] else "failed"}; and
  [`tp2-h100x2.json`](results/tp2-h100x2.json), {h100['gpu_count']} x {h100['gpu_name']}, {h100['date']}:
  {"passed" if h100['notebook']['passed'] else "failed"} (the crash below).

## CUDA graphs at tensor parallel 2 and 4

On these nodes vLLM {graphs['vllm_version']} died while capturing CUDA graphs at any tensor parallel size above 1,
bf16 or fp8, through Ray or in plain `vllm serve`: `an illegal memory access was encountered`, reported from
`custom_all_reduce.cuh`, with MMU faults (Xid 31) in the kernel log. Turning off vLLM's custom all-reduce or NCCL's
peer-to-peer path did not help, and eager mode ran: the fault came from something only compilation adds.

That is the all-reduce fusion. On Hopper at tensor parallel 2 or more, vLLM's default compilation fuses each all-reduce
with the RMSNorm after it into one FlashInfer kernel (`fuse_allreduce_rms`, on here:
`{graphs['node']['default_fuse_allreduce_rms_at_tp4']}` at tensor parallel 4), and with its backend left at
`{graphs['node']['default_flashinfer_allreduce_backend']}` vLLM gives that kernel a workspace of NVLink multicast memory,
which FlashInfer creates itself (`cuMulticastCreate`). The node's GPUs report multicast support
(`{graphs['node']['multicast_supported']}`), so vLLM does not fall back, while these nodes turn NVLink multicast off
for NCCL, PyTorch and NVSHMEM (`NCCL_NVLS_ENABLE=0` and its siblings), settings FlashInfer does not read. The default
was not run again to watch it fail, as that would create multicast objects on such a node.

With `compilation_config=dict(pass_config=dict(fuse_allreduce_rms=False))` every run captured its graphs
([`graph-capture-h200x4.json`](results/graph-capture-h200x4.json), a small Llama shape):
{"; ".join(f"tensor parallel {r['tensor_parallel_size']}, {r['weights']}: `{r['graphs_captured']}`" for r in small)}.
The notebook's 70B shape then captured its graphs on all four GPUs (`{next(l for l in tp4['engine'] if 'Graph capturing finished' in l).split('] ')[-1]}`).
`rehearsal` sets it. `rehearsal-fp8` still runs eager: fp8 captured its graphs on the small shape, but the 70B
shape in fp8 has not run compiled since.

## The planner against vLLM's KV cache

| run | vLLM's KV cache | planner | planner error |
|---|---|---|---|
{chr(10).join(_case_row(c) for c in shape)}

vLLM {validation['vllm_version']} gives the KV cache what is left of 92% of each GPU after the weights, the activation
peak of its profiling pass and the memory outside PyTorch that grows during that pass; at tensor parallel 4 it logged
{mem['weights_gib']} GiB of weights (the planner: {plan.weights_gib_per_gpu}), {mem['activation_peak_gib']} GiB of
activations and {mem['non_torch_gib']} GiB outside PyTorch per GPU. The CUDA graphs ({mem['cuda_graph_gib']} GiB), the
CUDA context and NCCL's buffers come out of the other 8%: the KV cache is the same with and without graphs. The planner
counts {capacity.NON_TORCH_GIB} GiB outside PyTorch at every size, as vLLM logged at tensor parallel 2 and 4, and no graph
pool. {" ".join(c["closed_gap"] for c in shape if c.get("closed_gap"))}

## Memory and time to ready

Each GPU held {mem['weights_gib']} GiB of weights and {kv_gib} GiB of KV cache at tensor parallel 4
({compiled['vllm_max_concurrency']:g} requests of {compiled['max_model_len']:,} tokens at once). The notebook was ready
{tp4['time_to_ready_s']:.0f} s after `serve run`, `torch.compile` and graph capture included.

On two H200s in eager mode it took {up['total']:.0f} s: {up['serve_run_to_replica_started']} s until Serve had started
its proxy and both replicas, {up['engine_config_and_process_start']} s for the engine replica to resolve vLLM's config
and start the engine process, {up['engine_to_workers_and_nccl']} s for one worker per GPU to start, import vLLM and
connect through NCCL, {up['weight_load_dummy']} s to create the random weights, {up['kv_cache_and_warmup']:.0f} s to
profile memory, allocate the KV cache and warm up, and {up['engine_started_to_ready']} s until Serve marked the
application ready. Real weights are 141 GB to read from disk or the network: that is the part that grows, to minutes.

## Speed at tensor parallel 4

[`benchmarks/bench.py`](../benchmarks/bench.py) `--models 70b` ran plain vLLM and the tutorial's deployment with the same
engine arguments on the four H200s, one after the other ([`bench-tp4-h200x4.json`](results/bench-tp4-h200x4.json):
{bench4['load']['input_len']} tokens in, {bench4['load']['output_len']} out, {sum(r['completed'] for r in bench4['runs'])}
requests, {sum(r['failed'] for r in bench4['runs'])} failed):

| clients | vLLM tok/s | tutorial tok/s | ratio | median TTFT ms, vLLM / tutorial | median TPOT ms, vLLM / tutorial |
|---|---|---|---|---|---|
{chr(10).join(_ttft_row(runs4, c) for c in levels)}

![Output throughput and TTFT of the 70B shape at tensor parallel 4](results/bench-tp4-h200x4.png)

The tutorial kept {min(ratios):.3f}x to {max(ratios):.3f}x of vLLM's output throughput at every level, and its first
token came within 10% of vLLM's up to 16 clients. At 64 and 256 it came later while each later token came sooner: the
requests reached the engine more spread out, so fewer prefills interrupted the running decodes. Where they waited
(HAProxy, the router's choice of replica, or the replica's queue) was not traced in this run.

At tensor parallel 2 with fp8 weights on two H200s
([`bench-tp2-h200x2.json`](results/bench-tp2-h200x2.json), Ray's default mode then; {sum(r['failed'] for r in runs)}
failed):

{table(bench)}

![Plain vLLM and Ray Serve's default mode at tensor parallel 2, fp8 weights](results/bench-tp2-h200x2.png)

## What to expect on 8 x A100-40G

There each GPU holds {a100.weights_gib_per_gpu} GiB of bf16 weights and {a100.kv_cache_gib_per_gpu} GiB of KV cache:
the planner says {a100.max_concurrency}x at 32,768 tokens, where the source's log says 13.02x. That log came from an
older vLLM, which gave the KV cache 90% of each GPU instead of 92% and counted NCCL's buffers against it. Read the real
figure from vLLM's log before promising more than 13.
"""


def _phase_table(runs: dict) -> str:
    """A column per run, a row per phase; a step whose log line a run lacks is counted in the next phase: "-"."""
    rows = "\n".join(f"| {name} | " + " | ".join(f"{r['phases_s'][name]:.1f}" if name in r["phases_s"] else "-"
                                                  for r in runs.values()) + " |" for name in cold_start.phase_names(runs))
    totals = " | ".join(f"**{r['total_s']:.1f}**" for r in runs.values())
    return (f"| phase | {' | '.join(runs)} |\n|---|{'---|' * len(runs)}\n{rows}\n"
            f"| **from `serve run` to the first answer** | {totals} |")


def startup_page(cold: dict, cpu: dict) -> str:
    runs = cold["runs"]
    (before, first, second, _, now_first, now) = runs.values()
    cpu_before, cpu_now = cpu["runs"].values()
    engine = "profile, KV cache, compile, CUDA graphs"
    replica = "replica starts, imports vLLM, engine process"
    imports = cold["python_import_s"]
    import_text = ", ".join(f"`{m}` {t:.0f} s" for m, t in imports.items())
    fastest = min(now_first["total_s"], now["total_s"])
    return f"""# How long it takes to start

[`benchmarks/cold_start.py`](../benchmarks/cold_start.py) reads the log lines that the `serve run` cell of an
executed notebook printed, with their timestamps, and splits the time from the start of that cell to the end of the
readiness check into phases; each phase ends at the first log line of the next step. The runs: the small model under
`LLM_PROFILE=gpu` on {cold['device']}, Ray {cold['ray_version']}, vLLM {cold['vllm_version']}, each one a whole run of
the notebook under nbmake.

![Start-up phases of the small model on one H100](results/cold-start-h100.png)

{_phase_table(runs)}

- **Engine initialisation** (vLLM's profile run, KV cache, warm-up, and with CUDA graphs their capture): {before['phases_s'][engine]:.0f} s
  with CUDA graphs and 92% of the card, {first['phases_s'][engine]:.0f} s eager with a 1 GiB cache on a fresh machine, and
  {second['phases_s'][engine]:.0f} s on the second start on the same machine (vLLM reports {second['vllm_reports']['init_engine_s']:.2f} s).
  The first start's extra time is work that the second one found done on the machine's disk, most likely kernels
  compiled on first use and cached under the home directory (which caches, was not measured): a node that keeps its
  home directory, or a mounted cache folder, between restarts should start the second way.
- **Serve itself** now starts with the cluster (`serve start`, in the notebook's *Start Serve* cell), once, before
  any deployment: the last two runs no longer count it, and a redeploy does not wait for it.
- **No node initialisation task.** Before it starts the engine, each replica of Ray Serve LLM runs a task on every
  node of its placement group to copy the weights from a cloud mirror, in a new worker process, even when the model is
  a local folder. Every profile's weights are on local disk, so the profiles turn it off
  ([`tutorial/startup.py`](../tutorial/startup.py)). On a CPU, where the replica computes the engine's configuration
  itself, that takes a whole process start out of the path. On a GPU it saves less: Ray Serve LLM computes the
  configuration in a task on the GPU, which starts that worker process anyway.
- **Ray's part** does not shrink with the model. In the last run: {now['phases_s']['serve run imports the app']:.0f} s for `serve run` to
  import the app, {now['phases_s'][replica]:.0f} s from there to vLLM's engine process, and
  {now['phases_s']['workers start, weights load']:.0f} s for vLLM's worker process, though the weights themselves load in
  {now['vllm_reports']['weights_s']:.2f} s. Each of these steps is a new Python process importing Ray Serve LLM or vLLM,
  one after the other: the `serve run` command, the replica, the configuration task, vLLM's engine process and its
  worker. On this machine one import alone, in a fresh `python`, took {import_text}.
- **Not reached**: a start within 90 s on the H100. The fastest run with these changes took {fastest:.0f} s, and
  {now['total_s'] - now['phases_s'][engine]:.0f} s of the last one was outside vLLM's engine initialisation. Ray Serve LLM
  places vLLM's engine and its worker in processes of their own (it allows only Ray's executor on GPUs), and each
  process pays the imports again. A machine with faster single cores, or with its Python packages on faster disk,
  shortens every link of that chain.

## On a CPU

The same measurement of the small model under `LLM_PROFILE=cpu` ({cpu['device']}, Ray {cpu['ray_version']},
vLLM {cpu['vllm_version']}), each a whole run of the notebook with `bash scripts/tutorial.sh`: before, with `serve start`
in the `serve run` cell and the node initialisation task; after, as the notebook runs now
([`cold-start-cpu.json`](results/cold-start-cpu.json)). vLLM's CPU worker logs no "Model loading took" line, so
starting it is counted in the engine initialisation.

![Start-up phases of the small model on a CPU](results/cold-start-cpu.png)

{_phase_table(cpu['runs'])}

From `serve run` to the first answer: {cpu_before['total_s']:.0f} s before, {cpu_now['total_s']:.0f} s after, with
Serve's own start ({cpu_before['phases_s']['Serve starts (in the same cell as `serve run`)']:.0f} s before) now in a cell of its own, and
{cpu_before['phases_s'][replica] - cpu_now['phases_s'][replica]:.0f} s less from the deployment to vLLM's engine process without
the node initialisation task. {"A start within 60 s: reached in this run." if cpu_now['total_s'] <= 60 else
"**Not reached in this run**: a start within 60 s."} The 2-core machine's speed also varies from hour to hour, by more
than the gain: {"compare runs made back to back, as these two were." if cpu_before['date'] == cpu_now['date'] else
f"these two ran on different days ({cpu_before['date']} and {cpu_now['date']}), so the difference mixes the changes with that drift."}
"""


def _autoscaling_run(r: dict, clients_note: str) -> str:
    per_replica = " and ".join(f"{n:,}" for n in sorted(r["requests_per_replica"].values(), reverse=True))
    load = r["load"]
    return (f"{r['device']}, `{r['profile']}` profile (`target_ongoing_requests` {r['target_ongoing_requests']:g}, "
            f"`max_ongoing_requests` {r['max_ongoing_requests']}, up to {r['max_replicas']} replicas, upscale after "
            f"{r['upscale_delay_s']:g} s, downscale after {r['downscale_delay_s']:g} s), {load['clients']} clients "
            f"{clients_note}, {r['date']}: the second replica was serving {r['scale_up_s']} s after the load began, and "
            f"the deployment was back to one replica {r['scale_down_s']} s after the load dropped. All "
            f"{load['requests']:,} requests completed: {load['failed']} failed and {load['broken_streams']} streams "
            f"ended without `[DONE]`; the replicas answered {per_replica} of them.")


def scaling_page(cpu: dict, gpu: dict) -> str:
    return f"""# Scale out under load

[`tests/test_autoscaling.py`](../tests/test_autoscaling.py) deploys the tutorial's file with an autoscaling profile,
sends streaming requests from many clients, drops to one client, and reads the replica count back from Serve every
2 seconds. `pytest tests/test_autoscaling.py --record` writes the run to `docs/results/`.

## On a CPU

{_autoscaling_run(cpu, "(the small model)")}

![Replicas and output tokens per second over time on a CPU](results/autoscaling-cpu.png)

## On two GPUs

{_autoscaling_run(gpu, "(the small model, one replica per GPU)")}

![Replicas and output tokens per second over time on two GPUs](results/autoscaling-h200x2.png)

Output did not grow with the second replica: a 135M model leaves the GPU nearly idle, and the limit was Serve's
HTTP path and the test's own Python clients. The run proves that Serve scales out and back without losing a request;
what a second replica adds in tokens per second depends on a model that keeps its GPU busy.

## What it means for the 70B

On both machines most of the time to scale out was the new replica's own start (see [startup.md](startup.md)).
A 70B replica must first load 141 GB of weights onto eight more GPUs, which takes minutes. That is why the tutorial's
file scales out at half of what a replica holds and scales in only after ten quiet minutes; for sharper bursts, keep
`min_replicas` higher.
"""


def two_nodes_page(m: dict) -> str:
    runs = {(x["config"], x["concurrency"]): x for x in m["bench"]["runs"]}
    levels = m["bench"]["load"]["concurrency"]
    rows = []
    for c in levels:
        pp, tp = runs["pp2-two-nodes", c], runs["tp2-one-node", c]
        rows.append(f"| {c} | {pp['output_throughput']:.0f} | {tp['output_throughput']:.0f} | "
                    f"{pp['output_throughput'] / tp['output_throughput']:.2f}x | {pp['median_ttft_ms']:.0f} / "
                    f"{tp['median_ttft_ms']:.0f} | {pp['median_tpot_ms']:.0f} / {tp['median_tpot_ms']:.0f} |")
    ratios = {c: runs["pp2-two-nodes", c]["output_throughput"] / runs["tp2-one-node", c]["output_throughput"] for c in levels}
    requests = sum(x["prompts"] for x in m["bench"]["runs"] if x["config"] == "pp2-two-nodes")
    loss = m["node_loss"]
    command = (f"python capacity.py --model tests/fixtures/data/llama-3.1-70b-vocab49152.json --gpu H200 "
               f"--tensor-parallel-size {m['tensor_parallel_size']} --pipeline-parallel-size {m['pipeline_parallel_size']} "
               f"--max-model-len {m['max_model_len']} --weight-dtype fp8")
    return f"""# Two nodes: one pipeline stage each

[`ci/multinode.sh`](../ci/multinode.sh) runs the tutorial's *When one node is not enough* steps for real: a head and
a worker node that joined it with `ray start --address`, one GPU each ({m['device']}), and the tutorial's deploy file
with `LLM_PROFILE=rehearsal-fp8` (the 70B's shape, fp8, random weights) as one pipeline stage per node
(`tensor_parallel_size` {m['tensor_parallel_size']} x `pipeline_parallel_size` {m['pipeline_parallel_size']},
`max_model_len` {m['max_model_len']}). Ray {m['ray_version']}, vLLM {m['vllm_version']}, {m['date']}.

Both nodes ran on one host, which differs from two hosts in this: each node got its GPU through
`CUDA_VISIBLE_DEVICES`, the worker its own `--temp-dir` and ports, Serve one HTTP proxy
(`serve start --proxy-location HeadOnly`, as both nodes would bind port 8000), and the stages talked inside the host
instead of over a network, so the cost below is a lower bound.

## Placement

The engine's workers ran on {m['placement_nodes']} distinct nodes, and the answer came back
(`answer_ok` {str(m['answer_ok']).lower()}).

## KV cache

vLLM allocated {m['vllm_kv_tokens']:,} tokens; `{command}` predicts {m['planner_kv_tokens']:,}
({m['planner_error_pct']:+.2f}%). Each stage holds half the layers and their KV cache, so the two GPUs hold about as many
tokens as at tensor parallel 2 ([rehearsal.md](rehearsal.md)).

## Speed

The benchmark's load ({m['bench']['load']['input_len']} tokens in, {m['bench']['load']['output_len']} out) against
the tutorial's deployment, pipeline parallel across the two nodes, and tensor parallel 2 on one node of the same kind
(from `docs/results/bench-tp2-h200x2.json`); {requests} requests on two nodes, {m['bench']['failed']['pp2-two-nodes']} failed:

| concurrency | PP 2, two nodes: tok/s | TP 2, one node: tok/s | PP / TP | TTFT ms, PP / TP | time per output token ms, PP / TP |
|---|---|---|---|---|---|
{chr(10).join(rows)}

![Output throughput and TTFT, pipeline parallel across two nodes against tensor parallel on one](results/multinode-h200x2.png)

With one request in flight the two ran alike ({ratios[levels[0]]:.2f}x); under load every token passes through the
two stages in turn, and the pipeline gave {ratios[levels[-2]]:.2f}x and {ratios[levels[-1]]:.2f}x of tensor
parallelism's throughput at {levels[-2]} and {levels[-1]} requests. Across real hosts the activations also cross the
network. Span nodes when the model does not fit one; when it does, add replicas of one node each.

## A node lost while serving

With four clients sending requests, all {loss['killed_processes']} processes of the worker node were killed, as when a
host dies. The replica cannot restart: its second stage needs a GPU that is gone. The {loss['failed_before']} requests
in flight and all {loss['requests_after']} sent in the next {loss['watched_s']} s got no answer and no error; each ended
at the client's own 60 s timeout. Serve reported the application `{loss['app_status_at_end']}`. Give every client
request a deadline and alert on the application's status (`serve status`): it cannot serve again before a node with
the right GPU joins (that recovery was not tried).
"""


PAGES = {
    "benchmark.md": ("docs/results/bench-h100.json, bench-cap32-h100.json, bench-cap256-h100.json, bench-modes-h100.json "
                     "and bench-stream-h100.json",
                     lambda: benchmark_page(_load("bench-h100.json"), _load("bench-cap32-h100.json"),
                                            _load("bench-cap256-h100.json"), _load("bench-modes-h100.json"),
                                            _load("bench-stream-h100.json"))),
    "startup.md": ("docs/results/cold-start-h100.json and cold-start-cpu.json",
                   lambda: startup_page(_load("cold-start-h100.json"), _load("cold-start-cpu.json"))),
    "scaling.md": ("docs/results/autoscaling-cpu.json and autoscaling-h200x2.json",
                   lambda: scaling_page(_load("autoscaling-cpu.json"), _load("autoscaling-h200x2.json"))),
    "two-nodes.md": ("docs/results/multinode-h200x2.json", lambda: two_nodes_page(_load("multinode-h200x2.json"))),
    "reliability.md": ("docs/results/reliability-cpu.json", lambda: reliability_page(_load("reliability-cpu.json"))),
    "security.md": ("docs/results/security-cpu.json", lambda: security_page(_load("security-cpu.json"))),
    "rehearsal.md": ("docs/results/tp4-h200x4.json, graph-capture-h200x4.json, bench-tp4-h200x4.json, "
                     "capacity-validation.json, tp2-h200x2.json, tp2-h100x2.json and bench-tp2-h200x2.json",
                     lambda: rehearsal_page(_load("tp4-h200x4.json"), _load("graph-capture-h200x4.json"),
                                            _load("bench-tp4-h200x4.json"), _load("capacity-validation.json"),
                                            _load("tp2-h200x2.json"), _load("tp2-h100x2.json"),
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
