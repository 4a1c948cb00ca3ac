"""ci/bench.py: its pieces, the committed H100 results, and a reduced live sweep on this CPU."""

import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))
import bench  # noqa: E402
from bench_plot import table  # noqa: E402

from tutorial import teardown  # noqa: E402

RESULTS = json.loads((ROOT / "ci/results/bench-h100.json").read_text())
RUN_FIELDS = ("model", "server", "config", "concurrency", "output_throughput", "median_ttft_ms", "p99_ttft_ms",
              "median_tpot_ms", "failed")


def test_engine_flags_are_the_engine_kwargs():
    assert bench.cli_flags({"max_model_len": 4096, "enforce_eager": True, "load_format": "dummy"}) == [
        "--max-model-len", "4096", "--enforce-eager", "--load-format", "dummy"]


def test_merge_replaces_only_the_runs_it_redoes():
    run = lambda cfg, c, tput: dict(model="m", server="s", config=cfg, concurrency=c, output_throughput=tput)  # noqa: E731
    old = {"runs": [run("vllm", 1, 1.0), run("tuned", 1, 2.0)], "servers": [], "ray_configs": {"a": {}}}
    new = {"runs": [run("tuned", 1, 3.0)], "servers": [], "ray_configs": {"tuned": {}}}
    merged = bench.merge(old, new)
    assert sorted((r["config"], r["output_throughput"]) for r in merged["runs"]) == [("tuned", 3.0), ("vllm", 1.0)]
    assert set(merged["ray_configs"]) == {"a", "tuned"}


def test_committed_h100_results_are_complete_and_lost_nothing():
    assert "H100" in RESULTS["device"] and RESULTS["date"] and RESULTS["ray_version"] and RESULTS["vllm_version"]
    for r in RESULTS["runs"]:
        assert all(r.get(f) is not None for f in RUN_FIELDS), r
        assert r["failed"] == 0 and r["server"] in ("ray-serve", "vllm")
    seen = {(r["model"], r["config"]) for r in RESULTS["runs"]}
    for model in ("smollm2", "8b"):
        assert {(model, "vllm"), (model, "tuned")} <= seen
        assert {r["concurrency"] for r in RESULTS["runs"] if r["model"] == model} == {1, 4, 16, 64, 256}
    assert (ROOT / "ci/results/bench-h100.png").stat().st_size > 10_000


def test_tuned_mode_meets_the_goal_on_the_8b_shape():
    runs = {(r["config"], r["concurrency"]): r for r in RESULTS["runs"] if r["model"] == "8b"}
    for c in (1, 4, 16, 64, 256):
        assert runs["tuned", c]["output_throughput"] >= 0.95 * runs["vllm", c]["output_throughput"], c
    assert runs["tuned", 1]["median_ttft_ms"] - runs["vllm", 1]["median_ttft_ms"] <= 10


def test_table_has_a_row_per_model_and_concurrency():
    rows = [line for line in table(RESULTS).splitlines()[2:]]
    assert len(rows) == 10 and rows[0].startswith("| smollm2 | 1 |")


def test_a_taken_port_stops_the_bench_with_its_reason_and_no_results(tmp_path):
    out = tmp_path / "bench.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", bench.VLLM_PORT))
        s.listen()
        p = subprocess.run([sys.executable, "ci/bench.py", "--smoke", "--servers", "vllm", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert f"port {bench.VLLM_PORT} is already taken" in p.stderr
    assert not out.exists()


def test_reduced_sweep_on_cpu_answers_every_request_and_leaves_nothing(tmp_path):
    out = tmp_path / "bench-cpu.json"
    p = subprocess.run([sys.executable, "ci/bench.py", "--smoke", "--out", str(out), "--logdir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {(r["config"], r["concurrency"]) for r in result["runs"]} == {
        (cfg, c) for cfg in ("vllm", "default", "tuned") for c in (1, 4)}
    assert all(r["failed"] == 0 and r["output_throughput"] > 0 for r in result["runs"])
    assert out.with_suffix(".png").exists()
    assert teardown.leftovers() == []
    assert not teardown.port_open(bench.VLLM_PORT)
