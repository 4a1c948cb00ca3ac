"""Tests that read only committed results (docs/results/) and the figures the notebook quotes
from them: no cluster, no GPU. They fail when a results file, its plot and the text that quotes
it drift apart, or when the planner no longer replays a recorded run. A run's own bars (no request
lost, at least 0.95x of vLLM) are checked by the experiment that writes the file, at --record.
"""

import hashlib
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

import capacity
from lab import bench_plot, cold_start
from lab.autoscaling import plot
from tutorial.bench_table import table
from lab import notebook_results
from lab.multinode import draw
from serve_plugins import cluster_env

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
NOTEBOOK_SHA256 = hashlib.sha256("".join(c.source + "\n" for c in NOTEBOOK.cells if c.cell_type == "code").encode()).hexdigest()
RESULTS = json.loads((ROOT / "docs/results/bench-h100.json").read_text())
MODES = json.loads((ROOT / "docs/results/bench-modes-h100.json").read_text())
VALIDATION = json.loads((ROOT / "docs/results/capacity-validation.json").read_text())
RUN_FIELDS = ("model", "server", "config", "concurrency", "output_throughput", "median_ttft_ms", "p99_ttft_ms",
              "median_tpot_ms", "failed")


MARKDOWN = "\n".join(c.source for c in NOTEBOOK.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("name", ["autoscaling-cpu", "autoscaling-h200x2", "autoscaling-70b-h200x2"])
def test_autoscaling_runs_are_linked_from_the_notebook(name):
    # docs/scaling.md prints the figures (a regenerate-and-diff test keeps it in step); the notebook links it.
    assert (ROOT / "docs" / "results" / f"{name}.json").exists()
    assert "(docs/scaling.md)" in MARKDOWN and "(docs/results/autoscaling-70b-h200x2.png)" in MARKDOWN


def test_the_70b_shaped_replicas_scaled_with_their_start_measured():
    r = json.loads((ROOT / "docs" / "results" / "autoscaling-70b-h200x2.json").read_text())
    assert r["profile"].startswith("rehearsal") and "70B" in r["model"] and r["max_model_len"] == 32768
    assert len([n for n in r["requests_per_replica"].values() if n > 0]) == 2
    start = r["replica_start_s"]
    assert start["decided"] and "workers start, weights load" in start["phases_s"]


@pytest.mark.parametrize("name", ["autoscaling-cpu", "autoscaling-h200x2", "autoscaling-70b-h200x2"])
def test_autoscaling_plot_is_regenerated_from_its_results(tmp_path, name):
    plot(json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text()), tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == (ROOT / "docs" / "results" / f"{name}.png").read_bytes()


@pytest.mark.parametrize("name", ["gpu-notebook-h200", "gpu-notebook-h100", "tp1-h100", "tp2-h100x2", "tp2-h200x2", "tp4-h200x4"])
def test_gpu_results_that_cover_an_earlier_notebook_say_so(name):
    result = json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text())
    (line,) = [line for line in (ROOT / "docs/maintainers.md").read_text().splitlines()
               if line.startswith(f"- [`docs/results/{name}.json`]")]
    assert (result["notebook_sha256"] == NOTEBOOK_SHA256) != ("covers an earlier revision" in line), line


def test_multinode_run_spanned_both_nodes_and_the_planner_replays_it():
    r = json.loads((ROOT / "docs" / "results" / "multinode-h200x2.json").read_text())
    # What the two-node run must show: workers on both nodes, an answer, no failed request.
    assert (r["nodes"], r["placement_nodes"], r["answer_ok"]) == (2, 2, True)
    assert (r["tensor_parallel_size"], r["pipeline_parallel_size"]) == (1, 2)
    assert r["bench"]["failed"] == {"pp2-two-nodes": 0, "tp2-one-node": 0}
    plan = capacity.plan(str(ROOT / "lab/shapes/llama-3.1-70b-vocab49152.json"), "H200", tensor_parallel_size=1,
                         pipeline_parallel_size=2, max_model_len=32768, weight_dtype="fp8")
    assert plan.kv_cache_tokens == r["planner_kv_tokens"]  # the command docs/two-nodes.md shows gives it
    assert r["node_loss"]["answered_after_loss"] == 0 and r["node_loss"]["app_status_at_end"] == "UNHEALTHY"
    assert "(docs/two-nodes.md)" in MARKDOWN and "`UNHEALTHY`" in MARKDOWN  # what the notebook says of it


def test_multinode_plot_is_regenerated_from_its_results(tmp_path):
    shutil.copy(ROOT / "docs" / "results" / "multinode-h200x2.json", tmp_path / "m.json")
    draw(tmp_path / "m.json")
    assert (tmp_path / "m.png").read_bytes() == (ROOT / "docs" / "results" / "multinode-h200x2.png").read_bytes()


def test_h100_results_file():
    result = json.loads((ROOT / "docs/results/gpu-notebook-h100.json").read_text())
    assert set(notebook_results.FIELDS) <= set(result)
    assert result["passed"] is True and result["cells_failed"] == 0 and result["shutdown_verified"] is True
    assert "H100" in result["gpu_name"] and result["gpu_count"] >= 1
    assert (result["ray_version"], result["vllm_version"]) == ("2.58.1", "0.26.0")
    assert "4" in result["answer"]
    assert 0 < result["first_token_s"] < result["time_to_ready_s"]


def test_tp2_results_file():
    """The two-GPU rehearsal: the notebook passed, and the file holds the planner cases and the benchmark."""
    result = json.loads((ROOT / "docs/results/tp2-h200x2.json").read_text())
    for key in ("date", "gpu_name", "gpu_count", "ray_version", "vllm_version", "notebook_sha256", "notebook", "cases",
                "bench"):
        assert key in result, key
    assert result["notebook"] == {"passed": True, "cells_failed": 0, "time_to_ready_s": result["time_to_ready_s"]}
    assert result["gpu_count"] == 2 and result["shutdown_verified"] is True
    assert result["gpu_memory_after_teardown_mib"] == [0, 0]
    for case in result["cases"]:
        assert case["tensor_parallel_size"] == 2 and abs(case["error_pct"]) < 3, case
    assert {r["concurrency"] for r in result["bench"]["runs"]} == {1, 16, 64}
    assert {r["server"] for r in result["bench"]["runs"]} == {"vllm", "ray-serve"}


@pytest.mark.parametrize("name", ["gpu-notebook-h200", "gpu-notebook-h100", "tp1-h100", "tp2-h100x2", "tp2-h200x2", "tp4-h200x4"])
def test_gpu_results_say_which_notebook_they_cover(name):
    result = json.loads((ROOT / f"docs/results/{name}.json").read_text())
    executed = nbformat.read(ROOT / f"docs/results/{name}.ipynb", as_version=4)
    assert result["notebook_sha256"] == notebook_results.notebook_sha256(executed)


def test_results_are_recomputed_from_the_executed_notebook():
    nb = nbformat.read(ROOT / "docs/results/gpu-notebook-h100.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    result = json.loads((ROOT / "docs/results/gpu-notebook-h100.json").read_text())
    assert notebook_results.time_to_ready(code) == result["time_to_ready_s"]
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)


def test_committed_h100_results_are_complete():
    assert "H100" in RESULTS["device"] and RESULTS["date"] and RESULTS["ray_version"] and RESULTS["vllm_version"]
    for r in RESULTS["runs"]:
        assert all(r.get(f) is not None for f in RUN_FIELDS), r
    assert {(r["model"], r["config"], r["concurrency"]) for r in RESULTS["runs"]} == {
        ("8b", config, c) for config in ("vllm", "tutorial") for c in (1, 4, 16, 64, 256)}
    assert RESULTS["ray_configs"]["tutorial"] == cluster_env.HIGH_THROUGHPUT  # the notebook's mode, as it is now
    (server,) = [s for s in RESULTS["servers"] if s["config"] == "tutorial"]
    # The mode read back from the running deployment: HAProxy on port 8000, no ingress replica in the path.
    assert server["mode"] == {"http_server": ["haproxy"], "deployments": ["LLMRouter", "LLMServer:my-llama-3_1-70b"]}
    assert server["max_ongoing_requests"] == 512  # twice the most clients: none waits for a free slot


@pytest.mark.parametrize("name, cap", [("bench-cap32-h100", 32), ("bench-cap256-h100", 256)])
def test_the_capped_runs_say_their_cap(name, cap):
    capped = json.loads((ROOT / "docs/results" / f"{name}.json").read_text())
    assert [s["max_ongoing_requests"] for s in capped["servers"] if s["server"] == "ray-serve"] == [cap]


def test_the_earlier_run_of_both_modes_ran_the_high_throughput_mode():
    assert MODES["ray_configs"]["tuned"] == cluster_env.HIGH_THROUGHPUT  # the mode the notebook now runs


def test_table_has_a_row_per_model_and_concurrency():
    assert len(table(RESULTS).splitlines()[2:]) == 5
    rows = table(MODES).splitlines()[2:]
    assert len(rows) == 10 and rows[0].startswith("| smollm2 | 1 |")


@pytest.mark.parametrize("case", VALIDATION["cases"], ids=lambda c: f"{c['model']}-{c['max_model_len']}")
def test_replays_the_vllm_runs_within_5_percent(case):
    model = case["model"] if case["model"] in capacity.MODELS else f"lab/shapes/{case['model']}.json"
    p = capacity.plan(str(ROOT / model) if "/" in model else model, case["gpu"],
                      tensor_parallel_size=case["tensor_parallel_size"], max_model_len=case["max_model_len"],
                      gpu_memory_utilization=case["gpu_memory_utilization"],
                      weight_dtype=case.get("weight_dtype", "bf16"), max_num_batched_tokens=case["max_num_batched_tokens"])
    assert p.kv_cache_tokens == case["planner_kv_tokens"]  # the planner has not drifted since the run
    # A case with an open gap says why; there the planner may only get closer to vLLM.
    bound = (abs(case["error_pct"]) + 0.5) / 100 if case.get("open_gap") else 0.05
    assert abs(p.kv_cache_tokens - case["vllm_kv_tokens"]) / case["vllm_kv_tokens"] < bound
    assert abs(p.max_concurrency - case["vllm_max_concurrency"]) / case["vllm_max_concurrency"] < bound


def test_validation_has_three_real_cases():
    assert len(VALIDATION["cases"]) >= 3 and "H100" in VALIDATION["device"] and VALIDATION["vllm_version"]


def test_the_tp2_benchmark_covers_its_levels():
    bench = json.loads((ROOT / "docs/results/bench-tp2-h200x2.json").read_text())
    assert {r["concurrency"] for r in bench["runs"]} == {1, 16, 64}


def test_the_planner_is_within_3_percent_of_every_vllm_run_but_the_gaps_it_names():
    assert all(abs(c["error_pct"]) < 3 or c.get("open_gap") for c in VALIDATION["cases"])
    # Both tensor-parallel sizes of the rehearsal, eager and compiled, on the same node.
    tp4 = {c["enforce_eager"] for c in VALIDATION["cases"] if c["tensor_parallel_size"] == 4}
    assert tp4 == {True, False}
    # What the planner counts outside PyTorch is what vLLM logged (docs/rehearsal.md); a gap names what vLLM logged there.
    measured = [c for c in VALIDATION["cases"] if c.get("vllm_memory_per_gpu")]
    logged = [c["vllm_memory_per_gpu"]["non_torch_gib"] for c in measured if not c.get("open_gap")]
    assert logged and all(round(abs(x - capacity.NON_TORCH_GIB), 2) <= 0.01 for x in logged)
    assert all(f"{c['vllm_memory_per_gpu']['non_torch_gib']} GiB outside PyTorch" in c["open_gap"]
               for c in measured if c.get("open_gap"))


def test_tp4_notebook_run_captured_cuda_graphs_on_every_gpu():
    """The current rehearsal profile on a 4-GPU node: bf16 at 32,768 tokens, compiled, without the fusion that crashed."""
    r = json.loads((ROOT / "docs/results/tp4-h200x4.json").read_text())
    assert r["passed"] and r["cells_failed"] == 0 and r["shutdown_verified"] and r["profile"] == "rehearsal"
    assert r["gpu_count"] == 4 and (r["ray_version"], r["vllm_version"]) == ("2.58.1", "0.26.0")
    assert r["engine_settings"] == {"tensor_parallel_size": 4, "pipeline_parallel_size": 1, "enforce_eager": False,
                                    "cudagraph_mode": "FULL_AND_PIECEWISE", "fuse_allreduce_rms": False}
    captured = {line.split("(Worker_TP")[1][0] for line in r["engine"]
                if line.startswith("(Worker_TP") and "Graph capturing finished" in line}
    assert captured == {"0", "1", "2", "3"}
    (compiled,) = [c for c in VALIDATION["cases"] if c["tensor_parallel_size"] == 4 and not c["enforce_eager"]]
    assert any(f"GPU KV cache size: {compiled['vllm_kv_tokens']:,} tokens" in line for line in r["engine"])


def test_graph_capture_runs_avoided_the_multicast_fusion_and_captured():
    r = json.loads((ROOT / "docs/results/graph-capture-h200x4.json").read_text())
    # The node claims multicast, and vLLM's defaults would fuse with it at TP 4: the profiles turn that off.
    assert r["node"]["multicast_supported"] == [1, 1, 1, 1] and r["node"]["default_fuse_allreduce_rms_at_tp4"]
    assert {(x["tensor_parallel_size"], x["weights"]) for x in r["runs"]} == {(2, "bf16"), (2, "fp8"), (4, "bf16")}
    assert all(x["passed"] and x["graphs_captured"] and not x["crash"] for x in r["runs"])


def test_tp4_benchmark_ran_compiled_at_tensor_parallel_4():
    r = json.loads((ROOT / "docs/results/bench-tp4-h200x4.json").read_text())
    assert r["load"]["concurrency"] == [1, 4, 16, 64, 256]
    assert all(s["engine_kwargs"]["tensor_parallel_size"] == 4 and not s["engine_kwargs"].get("enforce_eager")
               for s in r["servers"])


def test_stream_batching_run_read_the_interval_back():
    r = json.loads((ROOT / "docs/results/bench-stream-h100.json").read_text())
    (server,) = [s for s in r["servers"] if s["config"] == "stream-0"]
    assert server["stream_batching_interval_ms"] == 0  # what the running replica said it uses
    assert {(x["server"], x["concurrency"]) for x in r["runs"]} == {(s, c) for s in ("vllm", "ray-serve")
                                                                    for c in r["load"]["concurrency"]}


def test_start_up_phases_are_read_again_from_the_committed_notebook():
    result = json.loads((ROOT / "docs/results/cold-start-h100.json").read_text())
    latest = list(result["runs"].values())[-1]  # the run whose executed notebook is committed
    executed = nbformat.read(ROOT / "docs/results/gpu-notebook-h100.ipynb", as_version=4)
    assert cold_start.phases(executed) == {k: latest[k] for k in ("total_s", "phases_s", "vllm_reports", "notebook_sha256")}


def test_cpu_start_up_is_read_again_from_the_committed_notebook():
    result = json.loads((ROOT / "docs/results/cold-start-cpu.json").read_text())
    before, after = result["runs"].values()
    executed = nbformat.read(ROOT / "docs/results/cpu-notebook.ipynb", as_version=4)
    assert cold_start.phases(executed) == {k: after[k] for k in ("total_s", "phases_s", "vllm_reports", "notebook_sha256")}
    assert after["notebook_sha256"] == NOTEBOOK_SHA256  # a run of the notebook as it is
    assert result["device"] == "CPU (2 cores)" and before["profile"] == after["profile"] == "cpu"


@pytest.mark.parametrize("name, draw", [(name, bench_plot.plot) for name in ("bench-h100", "bench-cap32-h100", "bench-cap256-h100",
                                                                           "bench-modes-h100", "bench-stream-h100",
                                                                           "bench-tp4-h200x4")]
                         + [(name, cold_start.plot) for name in ("cold-start-h100", "cold-start-cpu")])
def test_benchmark_plots_are_regenerated_from_their_results(tmp_path, name, draw):
    draw(json.loads((ROOT / "docs/results" / f"{name}.json").read_text()), tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == (ROOT / "docs/results" / f"{name}.png").read_bytes()


def test_the_notebook_names_the_revision_each_gpu_run_covers():
    # The rehearsal section quotes each GPU results file's notebook_sha256: a rerun or a code-cell edit shows here.
    nb = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    (cell,) = [c.source for c in nb.cells if "records the `notebook_sha256`" in c.source]
    assert f"(this notebook's: `{notebook_results.notebook_sha256(nb)[:8]}`" in cell
    quoted = dict(re.findall(r"\(docs/results/([\w-]+\.json)\) `([0-9a-f]{8})`", cell))
    assert len(quoted) == 6
    for name, sha in quoted.items():
        assert json.loads((ROOT / "docs" / "results" / name).read_text())["notebook_sha256"][:8] == sha, name
