"""Regenerate the report pages in docs/ from the results files; --check only reports a difference.

  python -m lab render          write the report pages in docs/ (PAGES below)
  python -m lab render --check  exit 1 when a page differs from a fresh render

Every figure on a page is printed from its results file, so a page cannot drift from the run it
reports. The prose around the figures is in the page's template, lab/pages/NAME.md; each page
function here reads the results and works out the figures its template prints.
"""

import json
import statistics
from pathlib import Path

import jinja2

import capacity
from lab import cold_start
from lab.autoscaling import tokens_per_s
from lab.bench import BAR
from tutorial.bench_table import table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOCS = ROOT / "docs"
BANNER = "<!-- Generated from {source} by lab/render.py and its templates in lab/pages/; do not edit by hand. Rerun: python -m lab render -->\n\n"
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


# The prose of each page is a template, lab/pages/NAME.md, its figures filled in from the results: a
# figure's format is Python's (`{{ x | f(".2f") }}`). A template sees the figures its page function
# names and the helpers below, nothing else (a name missing from them is an error, not a blank).
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "pages"), keep_trailing_newline=True,
                               undefined=jinja2.StrictUndefined, autoescape=False)
TEMPLATES.filters["f"] = format


def page(template: str, **figures) -> str:
    """The template's prose with the page function's figures filled in."""
    return TEMPLATES.get_template(template).render(figures).removesuffix("\n")


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
    return page("bench-stream.md", gap0=gap0, gap50=gap50, rows=rows, runs=runs, server=server, stalled=stalled,
                                   stream=stream, tpot=tpot, worst=worst)


def _tutorial_ratios(bench: dict) -> dict[int, float]:
    """The as-deployed mode's 8B output throughput as a share of vLLM's, at each level of the sweep."""
    runs = _runs(bench)
    return {c: _ratio(runs, "8b", "tutorial", c) for c in bench["load"]["concurrency"]}


def _at_levels(ratios: dict[int, float]) -> str:
    return ", ".join(f"{r:.2f}x at {c} clients" for c, r in ratios.items())


def benchmark_page(bench: dict, cap32: dict, cap256: dict, modes: dict, stream: dict, h200: dict,
                   h200_again: dict) -> str:
    runs, load = _runs(bench), bench["load"]
    h200_runs = _runs(h200)
    again_text = _at_levels(_tutorial_ratios(h200_again))
    again_failed = sum(r["failed"] for r in h200_again["runs"])
    h200_missed = _at_levels({c: r for c, r in _tutorial_ratios(h200).items() if r < BAR}) or "nothing"
    h200_failed = sum(r["failed"] for r in h200["runs"])
    levels = load["concurrency"]
    server = _server(bench, "tutorial")
    ratios = _tutorial_ratios(bench)
    met = [c for c in levels if ratios[c] >= BAR]
    missed = [c for c in levels if ratios[c] < BAR]
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
    deployments_text = " and ".join(f"`{d}`" for d in server['mode']['deployments'])
    met_ratios = ", ".join(f"{ratios[c]:.2f}x" for c in met)
    missed_ratios = _at_levels({c: ratios[c] for c in missed}) or "nothing"
    return page("benchmark.md", again_failed=again_failed, again_text=again_text, at_top=at_top, bench=bench,
                                capped_server=capped_server, capped_text=capped_text, default_small=default_small,
                                deployments_text=deployments_text, env=env, even=even, even_server=even_server,
                                even_top=even_top, h200=h200, h200_again=h200_again, h200_failed=h200_failed,
                                h200_missed=h200_missed, h200_runs=h200_runs, levels=levels, load=load, met=met,
                                met_ratios=met_ratios, missed_ratios=missed_ratios, modes=modes, one=one, ratios=ratios,
                                reasons=reasons, ref=ref, ref_text=ref_text, ref_ttft=ref_ttft, server=server,
                                stream=stream, top=top, ttft_default=ttft_default, ttft_gap=ttft_gap,
                                tuned_small=tuned_small)


def reliability_page(rel: dict) -> str:
    # One table row each: the message on one line, at most 100 characters.
    bad = "\n".join(f"| {b['input']} | {b['status']} | {' '.join(b['message'].split())[:100].replace('|', '/')} |"
                    for b in rel["bad_inputs"])
    faults = "\n".join(
        f"| {f['fault']} | {f['recovery_s']} s | {f['failed_during']} of {f['requests_during']} "
        f"({', '.join(f'{n} x {s}' for s, n in f['failed_during_by_status'].items()) or 'none'}) | "
        f"{f['succeeded_after_recovery']} of 5 |" for f in rel["faults"])
    load, stream, prom, reload = rel["load"], rel["stream_disconnect"], rel["prometheus"], rel["stream_across_reload"]
    recovery = sorted(f["recovery_s"] for f in rel["faults"])
    return page("reliability.md", bad=bad, faults=faults, load=load, prom=prom, recovery=recovery, rel=rel, reload=reload,
                                  stream=stream)


def security_page(sec: dict) -> str:
    def shown(v) -> str:
        return f"`{v}`" if isinstance(v, int) else str(v)

    ports = "\n".join(f"| {port} | {s['process']} | {shown(s['GET /'])} | "
                       f"{shown(s.get('chat', ''))}{s.get('gRPC without the token', '')} |"
                       for port, s in sec["outside_address"].items())
    abuse = "\n".join(f"| {a['case']} | {a['status'] if isinstance(a['status'], int) else json.dumps(a['status'])} | "
                       f"{'yes' if a['alive_after'] else '**no**'} |" for a in sec["abuse"])
    seen = sec["outside_address"]
    answering = [p for p, s in seen.items() if s["GET /"] != "refused"]
    grpc = [p for p in answering if seen[p].get("gRPC without the token") == "UNAUTHENTICATED"]
    outside_summary = (f"{len(seen) - len(answering)} of the {len(seen)} refused the connection: they listen on loopback "
                       f"only. " + (f"The {len(grpc)} that took it ({', '.join(grpc)}) are the replicas' gRPC servers, "
                                    "which Serve binds to every interface in its code (`[::]:0`); a call without "
                                    "Ray's token got `UNAUTHENTICATED`. " if grpc else "")
                       + (f"**Also reachable: {', '.join(p for p in answering if p not in grpc)}.**"
                          if len(grpc) < len(answering) else ""))
    idle, slow, killed, token = sec["idle_connections"], sec["slow_client"], sec["haproxy_killed"], sec["token_files"]
    stranger_spared = 'yes' if sec['stale_record_spared']['stranger_alive'] else '**no**'
    port_8000_while_held = "answered" if idle['port_8000_answered_while_held'] else "**stopped answering**"
    schema_message = next(a.get("message") for a in sec["abuse"] if a["case"] == "a JSON schema that refers to itself")
    return page("security.md", abuse=abuse, idle=idle, killed=killed, outside_summary=outside_summary,
                               port_8000_while_held=port_8000_while_held, ports=ports, schema_message=schema_message,
                               sec=sec, slow=slow, stranger_spared=stranger_spared, token=token)


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


def rehearsal_page(tp4: dict, graphs: dict, bench4: dict, validation: dict, h200: dict, h100: dict, bench: dict,
                   tp1: dict) -> str:
    up = h200["startup_s"]
    shape = [c for c in validation["cases"] if c["model"] == "llama-3.1-70b-vocab49152"]
    (compiled,) = [c for c in shape if c["tensor_parallel_size"] == 4 and not c["enforce_eager"]]
    mem = compiled["vllm_memory_per_gpu"]
    plan = capacity.plan(str(ROOT / "lab/shapes/llama-3.1-70b-vocab49152.json"), compiled["gpu"],
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
    small_graphs = "; ".join(f"tensor parallel {r['tensor_parallel_size']}, {r['weights']}: `{r['graphs_captured']}`" for r in small)
    tp4_graph_line = next(l for l in tp4['engine'] if 'Graph capturing finished' in l).split('] ')[-1]
    case_rows = chr(10).join(_case_row(c) for c in shape)
    closed_gaps = " ".join(c["closed_gap"] for c in shape if c.get("closed_gap"))
    open_gaps = " ".join(c["open_gap"] for c in shape if c.get("open_gap"))
    (tp1_case,) = [c for c in shape if c["tensor_parallel_size"] == 1]
    bench4_completed = sum(r['completed'] for r in bench4['runs'])
    bench4_failed = sum(r['failed'] for r in bench4['runs'])
    ttft_rows = chr(10).join(_ttft_row(runs4, c) for c in levels)
    tp2_failed = sum(r['failed'] for r in runs)
    return page("rehearsal.md", a100=a100, bench=bench, bench4=bench4, bench4_completed=bench4_completed,
                                bench4_failed=bench4_failed, case_rows=case_rows, closed_gaps=closed_gaps,
                                open_gaps=open_gaps, tp1=tp1, tp1_case=tp1_case,
                                compiled=compiled, graphs=graphs, h100=h100, h200=h200, kv_gib=kv_gib, mem=mem, plan=plan,
                                ratios=ratios, settings=settings, small_graphs=small_graphs, tp2_failed=tp2_failed,
                                tp4=tp4, tp4_graph_line=tp4_graph_line, ttft_rows=ttft_rows, up=up, validation=validation)


def _phase_table(runs: dict) -> str:
    """A column per run, a row per phase; a step whose log line a run lacks is counted in the next phase: "-"."""
    rows = "\n".join(f"| {name} | " + " | ".join(f"{r['phases_s'][name]:.1f}" if name in r["phases_s"] else "-"
                                                  for r in runs.values()) + " |" for name in cold_start.phase_names(runs))
    totals = " | ".join(f"**{r['total_s']:.1f}**" for r in runs.values())
    return (f"| phase | {' | '.join(runs)} |\n|---|{'---|' * len(runs)}\n{rows}\n"
            f"| **from `serve run` to the first answer** | {totals} |")


def startup_page(cold: dict, cpu: dict) -> str:
    runs = cold["runs"]
    (before, first, second, _, now_first, now, *latest) = runs.values()
    cpu_before, cpu_now = cpu["runs"].values()
    engine = "profile, KV cache, compile, CUDA graphs"
    replica = "replica starts, imports vLLM, engine process"
    imports = cold["python_import_s"]
    import_text = ", ".join(f"`{m}` {t:.0f} s" for m, t in imports.items())
    fastest = min(now_first["total_s"], now["total_s"])
    within_60_s = ("A start within 60 s: reached in this run." if cpu_now['total_s'] <= 60 else
              "**Not reached in this run**: a start within 60 s.")
    drift_note = ("compare runs made back to back, as these two were." if cpu_before['date'] == cpu_now['date'] else
              f"these two ran on different days ({cpu_before['date']} and {cpu_now['date']}), so the difference mixes "
              "the changes with that drift.")
    return page("startup.md", before=before, cold=cold, cpu=cpu, cpu_before=cpu_before, cpu_now=cpu_now,
                              drift_note=drift_note, engine=engine, fastest=fastest, first=first, import_text=import_text,
                              latest=latest, now=now, replica=replica, runs=runs, second=second, within_60_s=within_60_s)


def _autoscaling_run(r: dict, clients_note: str) -> str:
    per_replica = " and ".join(f"{n:,}" for n in sorted(r["requests_per_replica"].values(), reverse=True))
    load = r["load"]
    return (f"{r['device']}, `{r['profile']}` profile (`target_ongoing_requests` {r['target_ongoing_requests']:g}, "
            f"`max_ongoing_requests` {r['max_ongoing_requests']}, up to {r['max_replicas']} replicas, upscale after "
            f"{r['upscale_delay_s']:g} s, downscale after {r['downscale_delay_s']:g} s), {load['clients']} clients "
            f"{clients_note}, {r['date']}: the second replica was serving {r['scale_up_s']} s after the load began, and "
            f"the deployment was back to one replica {r['scale_down_s']} s after the load dropped. All "
            f"{load['requests']:,} requests completed: {load['failed']} failed and {load['broken_streams']} streams "
            f"ended without `[DONE]`; the replicas answered {per_replica} of them.{_replica_start(r)}")


def _replica_start(r: dict) -> str:
    """The second replica's start, phase by phase, where the run recorded it."""
    start = r.get("replica_start_s") or {}
    if not start.get("phases_s"):
        return ""
    rows = "\n".join(f"| {name} | {s:g} |" for name, s in start["phases_s"].items())
    total = f"{start['total_s']:g} s" if start.get("total_s") is not None else "no answer seen"
    return (f"\n\nFrom the autoscaler's decision to the second replica's first answer, {total}:\n\n"
            f"| phase | seconds |\n|---|---|\n{rows}")


def _steady(r: dict, start: float, end: float) -> dict:
    """Median output tokens per second and time to first chunk of the timeline's samples in [start, end]."""
    t = [p[0] for p in r["timeline"]]
    rates = tokens_per_s(t, [p[4] for p in r["timeline"]])
    inside = [(rate, p) for rate, p in zip(rates, r["timeline"]) if start <= p[0] <= end]
    return {"tokens_per_s": statistics.median(rate for rate, _ in inside),
            "ttft_s": statistics.median(p[5] for _, p in inside if p[5] is not None) / 1000}


def scaling_page(cpu: dict, gpu: dict, gpu70: dict, zeros: dict[str, dict]) -> str:
    up = gpu70["load_start_s"] + gpu70["scale_up_s"]
    one = _steady(gpu70, gpu70["load_start_s"] + 20, up)
    two = _steady(gpu70, up + 20, gpu70["load_stop_s"])
    return page("scaling.md", cpu=cpu, gpu=gpu, gpu70=gpu70, one=one, two=two, zeros=zeros)


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
    command = (f"python capacity.py --model lab/shapes/llama-3.1-70b-vocab49152.json --gpu H200 "
               f"--tensor-parallel-size {m['tensor_parallel_size']} --pipeline-parallel-size {m['pipeline_parallel_size']} "
               f"--max-model-len {m['max_model_len']} --weight-dtype fp8")
    return page("two-nodes.md", command=command, levels=levels, loss=loss, m=m, ratios=ratios, requests=requests,
                                rows=rows)


# What a template may call besides its figures: these helpers and a few builtins.
TEMPLATES.globals.update(chr=chr, map=map, str=str, max=max, min=min, capacity=capacity, table=table, _ratio=_ratio,
                         stream_section=stream_section, _phase_table=_phase_table, _autoscaling_run=_autoscaling_run)

PAGES = {
    "benchmark.md": ("docs/results/bench-h100.json, bench-cap32-h100.json, bench-cap256-h100.json, bench-modes-h100.json, "
                     "bench-stream-h100.json, bench-h200.json and bench-256-h200.json",
                     lambda: benchmark_page(_load("bench-h100.json"), _load("bench-cap32-h100.json"),
                                            _load("bench-cap256-h100.json"), _load("bench-modes-h100.json"),
                                            _load("bench-stream-h100.json"), _load("bench-h200.json"),
                                            _load("bench-256-h200.json"))),
    "startup.md": ("docs/results/cold-start-h100.json and cold-start-cpu.json",
                   lambda: startup_page(_load("cold-start-h100.json"), _load("cold-start-cpu.json"))),
    "scaling.md": ("docs/results/autoscaling-cpu.json, autoscaling-h200x2.json, autoscaling-70b-h200x2.json, "
                   "scale-to-zero-cpu.json and scale-to-zero-70b-h100.json",
                   lambda: scaling_page(_load("autoscaling-cpu.json"), _load("autoscaling-h200x2.json"),
                                        _load("autoscaling-70b-h200x2.json"),
                                        {name: _load(f"{name}.json") for name in ("scale-to-zero-cpu", "scale-to-zero-70b-h100")})),
    "two-nodes.md": ("docs/results/multinode-h200x2.json", lambda: two_nodes_page(_load("multinode-h200x2.json"))),
    "reliability.md": ("docs/results/reliability-cpu.json", lambda: reliability_page(_load("reliability-cpu.json"))),
    "security.md": ("docs/results/security-cpu.json", lambda: security_page(_load("security-cpu.json"))),
    "rehearsal.md": ("docs/results/tp4-h200x4.json, graph-capture-h200x4.json, bench-tp4-h200x4.json, "
                     "capacity-validation.json, tp2-h200x2.json, tp2-h100x2.json, bench-tp2-h200x2.json and tp1-h100.json",
                     lambda: rehearsal_page(_load("tp4-h200x4.json"), _load("graph-capture-h200x4.json"),
                                            _load("bench-tp4-h200x4.json"), _load("capacity-validation.json"),
                                            _load("tp2-h200x2.json"), _load("tp2-h100x2.json"),
                                            _load("bench-tp2-h200x2.json"), _load("tp1-h100.json"))),
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
        print(f"docs/{name} is out of date: run python -m lab render")
    return 1 if stale else 0

