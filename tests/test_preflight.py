"""The preflight check against machines described by hand: each missing piece is named."""

import ast
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tutorial.gpus import ray_gpu_type
from tutorial.preflight import GIB, Machine, check, pending_replicas

A100_40 = ("NVIDIA A100-SXM4-40GB", 40960)
H100 = ("NVIDIA H100 80GB HBM3", 81559)
ROOT = Path(__file__).resolve().parent.parent


CPU_ENGINE = {"bundles": [{"CPU": 1}]}  # as the cpu profile places it


def config(source="meta-llama/Llama-3.1-70B-Instruct", accelerator="A100-40G", deployment=None, placement=None,
           **engine):
    """accelerator=None without `placement` is an engine on CPUs."""
    engine = {"max_model_len": 32768, "tensor_parallel_size": 8, **engine}
    return SimpleNamespace(
        model_loading_config=SimpleNamespace(model_source=source), accelerator_type=accelerator, engine_kwargs=engine,
        deployment_config=deployment or {}, placement_group_config=placement or (CPU_ENGINE if accelerator is None else None),
    )


def node(**kw):
    base = dict(gpus=[A100_40] * 8, disk_free_bytes=500 * GIB, mem_available_bytes=200 * GIB,
                mem_total_bytes=256 * GIB, hf_token_set=True, busy_ports={})
    return Machine(**{**base, **kw})


def test_the_source_node_passes():
    assert check(config(), node()) == []


@pytest.mark.parametrize(
    "machine, expected",
    [
        (node(gpus=[]), "needs 8 x A100-40G"),
        (node(gpus=[A100_40] * 4), "this machine has 4"),
        (node(gpus=[H100] * 8), "this machine has 0 (NVIDIA H100 80GB HBM3)"),
        (node(gpus=[("NVIDIA A100-SXM4-80GB", 81920)] * 8), "this machine has 0"),
        (node(disk_free_bytes=50 * GIB), "disk: the weights take about 137 GiB"),
        (node(mem_available_bytes=8 * GIB), "memory:"),
        (node(hf_token_set=False), "HF_TOKEN: meta-llama/Llama-3.1-70B-Instruct is gated"),
        (node(busy_ports={8000: "pid 42 (python -m http.server 8000)"}), "port 8000: already in use by pid 42"),
    ],
)
def test_each_missing_piece_is_named(machine, expected):
    problems = check(config(), machine)
    assert len(problems) == 1 and expected in problems[0], problems


def test_pipeline_parallel_counts_gpus():
    problems = check(config(pipeline_parallel_size=2), node())
    assert "needs 16 x A100-40G" in problems[0]


def test_ungated_copy_needs_no_token():
    assert check(config(source="unsloth/Meta-Llama-3.1-70B-Instruct"), node(hf_token_set=False)) == []


def test_cpu_profile_on_a_laptop(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cpu = config(source=str(tmp_path), accelerator=None, tensor_parallel_size=1, kv_cache_memory_bytes=GIB)
    laptop = node(gpus=[], disk_free_bytes=1 * GIB, mem_available_bytes=8 * GIB, mem_total_bytes=64 * GIB)
    assert check(cpu, laptop) == []  # an absolute KV cache: what RAM the machine has does not matter
    assert "memory:" in check(cpu, node(gpus=[], mem_available_bytes=4 * GIB, mem_total_bytes=24 * GIB))[0]
    two = config(source=str(tmp_path), accelerator=None, tensor_parallel_size=1, kv_cache_memory_bytes=GIB,
                 deployment={"autoscaling_config": {"max_replicas": 2}})
    assert "memory:" in check(two, laptop)[0]  # room for the second replica too


def test_missing_local_checkpoint(tmp_path):
    cpu = config(source=str(tmp_path / "nope"), accelerator=None, tensor_parallel_size=1)
    assert "holds no checkpoint" in check(cpu, node(gpus=[]))[0]


def test_gpu_names_as_ray_labels_them():
    assert ray_gpu_type(*A100_40) == {"A100", "A100-40G"}
    assert ray_gpu_type("NVIDIA A100 80GB PCIe", 81920) == {"A100", "A100-80G"}
    assert ray_gpu_type(*H100) == {"H100"}
    assert ray_gpu_type("NVIDIA L40S", 46068) == {"L40S"}


def test_capacity_stops_70b_on_four_a100_40g_at_a_context_they_cannot_hold():
    assert check(config(tensor_parallel_size=4), node(gpus=[A100_40] * 4)) == []  # about 1.2 requests of 32768
    problems = check(config(tensor_parallel_size=4, max_model_len=65536), node(gpus=[A100_40] * 4))
    assert len(problems) == 1 and problems[0].startswith("capacity: the KV cache holds"), problems


@pytest.mark.parametrize(
    "deployment, expected",
    [
        ({"autoscaling_config": {"target_ongoing_requests": 0}}, "target_ongoing_requests is 0"),
        ({"max_ongoing_requests": 4, "autoscaling_config": {"target_ongoing_requests": 8}},
         "raise max_ongoing_requests to at least 8"),
        ({"autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}, "raise max_replicas to at least 3"),
    ],
)
def test_scaling_settings_that_never_scale(deployment, expected):
    problems = check(config(deployment=deployment), node())
    assert len(problems) == 1 and problems[0].startswith("autoscaling:") and expected in problems[0], problems


def test_more_replicas_than_the_node_holds_is_a_warning():
    cfg = config(deployment={"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}})
    assert check(cfg, node()) == []
    assert "3 replica(s) would stay PENDING" in pending_replicas(cfg, node())
    assert pending_replicas(cfg, node(gpus=[A100_40] * 32)) is None


def test_parallelism_the_model_cannot_split():
    problems = check(config(tensor_parallel_size=3), node(gpus=[A100_40] * 3))
    assert problems == ["parallelism: --tensor-parallel-size 3 does not divide the 64 attention heads"]


def test_too_small_a_node_is_offered_what_fits():
    problems = check(config(tensor_parallel_size=2, accelerator="H100", max_model_len=65536), node(gpus=[H100] * 2))
    assert len(problems) == 1 and "What fits: max_model_len 35840 fits; fp8 weights fit at 65536." in problems[0], problems


def test_a_cluster_counts_gpus_on_every_node_not_the_local_ones():
    from tutorial.preflight import Node

    head = Node("10.0.0.1 (head)", 0, set())  # the usual layout: a head without GPUs
    workers = [Node(f"10.0.0.{i}", 8, {"A100", "A100-40G"}) for i in (2, 3)]
    cfg = config(deployment={"autoscaling_config": {"min_replicas": 2, "max_replicas": 4}})
    assert check(cfg, node(gpus=[], cluster=[head, *workers])) == []
    assert "2 replica(s) would stay PENDING" in pending_replicas(cfg, node(gpus=[], cluster=[head, *workers]))


def test_a_node_that_did_not_join_or_has_other_gpus_is_named():
    from tutorial.preflight import Node

    head, worker = Node("10.0.0.1 (head)", 0, set()), Node("10.0.0.2", 8, {"A100", "A100-80G"})
    problems = check(config(), node(gpus=[A100_40] * 8, cluster=[head, worker]))  # local GPUs do not count
    assert len(problems) == 1 and "the Ray cluster's 2 node(s) have 0" in problems[0], problems
    assert "10.0.0.1 (head): no GPU; 10.0.0.2: 8 x A100/A100-80G" in problems[0]
    assert "ray start --address" in problems[0]


def small_model(tmp_path) -> str:
    (tmp_path / "config.json").write_text("{}")
    return str(tmp_path)


def test_a_config_without_accelerator_type_takes_any_gpu(tmp_path):
    cfg = config(source=small_model(tmp_path), accelerator=None, placement={"bundle_per_worker": {"GPU": 1}},
                 tensor_parallel_size=1, max_model_len=4096)
    assert check(cfg, node(gpus=[("NVIDIA GeForce RTX 4090", 24564)])) == []
    (problem,) = check(cfg, node(gpus=[]))
    assert "needs 1 x GPU of any type" in problem and "this machine has 0 (no NVIDIA GPU)" in problem, problem


def test_a_cpu_engine_needs_no_gpu(tmp_path):
    cfg = config(source=small_model(tmp_path), accelerator=None, tensor_parallel_size=1, max_model_len=2048,
                 kv_cache_memory_bytes=GIB)
    assert check(cfg, node(gpus=[], mem_available_bytes=8 * GIB)) == []


def test_building_the_app_still_needs_a_running_ray_so_preflight_stops_before_it():
    # With auto-connect off, Ray Serve LLM's builder fails without a cluster to ask (Ray 2.58 to 2.60), and
    # with it on it starts one. This fails once the builder needs none: preflight may then build the app.
    code = ("from ray.serve.llm import build_openai_app\nfrom tutorial.preflight import load_llm_config\n"
            "try:\n    build_openai_app({'llm_configs': [load_llm_config()]})\n    print('BUILT')\n"
            "except Exception as e:\n    print('FAILED', type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LLM_PROFILE": "cpu", "RAY_ENABLE_AUTO_CONNECT": "0"})
    assert out.stdout.splitlines()[-1:] == ["FAILED AttributeError 'Worker' object has no attribute 'core_worker'"], \
        out.stdout[-2000:] + out.stderr[-2000:]


def test_preflight_reads_the_deploy_file_without_building_the_app_or_patching_ray():
    # Building the app would start a throwaway Ray cluster; preflight runs before `ray start`.
    code = ("import ray, ray.serve.llm\nreal = ray.serve.llm.build_openai_app\n"
            "from tutorial.preflight import load_llm_config\nc = load_llm_config()\n"
            "print('CONFIG', c.model_loading_config.model_id, c.engine_kwargs['max_model_len'], ray.is_initialized(),"
            " ray.serve.llm.build_openai_app is real)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LLM_PROFILE": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("CONFIG ")]
    assert line.split()[1:] == ["my-llama-3.1-70b", "2048", "False", "True"]
    tree = ast.parse((ROOT / "tutorial/preflight.py").read_text())
    assigned = [ast.unparse(t) for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets]
    assert not [t for t in assigned if t.startswith("ray.")], assigned
