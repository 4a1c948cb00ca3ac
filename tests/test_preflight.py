"""The preflight check against machines described by hand: each missing piece is named."""

from types import SimpleNamespace

import pytest

from tutorial.gpus import ray_gpu_type
from tutorial.preflight import GIB, Machine, check

A100_40 = ("NVIDIA A100-SXM4-40GB", 40960)
H100 = ("NVIDIA H100 80GB HBM3", 81559)


def config(source="meta-llama/Llama-3.1-70B-Instruct", accelerator="A100-40G", **engine):
    engine = {"max_model_len": 32768, "tensor_parallel_size": 8, **engine}
    return SimpleNamespace(
        model_loading_config=SimpleNamespace(model_source=source), accelerator_type=accelerator, engine_kwargs=engine
    )


def node(**kw):
    base = dict(gpus=[A100_40] * 8, disk_free_bytes=500 * GIB, mem_available_bytes=200 * GIB,
                mem_total_bytes=256 * GIB, hf_token_set=True, busy_ports=[])
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
        (node(busy_ports=[8000]), "port 8000: already in use"),
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
    cpu = config(source=str(tmp_path), accelerator=None, tensor_parallel_size=1, gpu_memory_utilization=0.3)
    laptop = node(gpus=[], disk_free_bytes=1 * GIB, mem_available_bytes=20 * GIB, mem_total_bytes=24 * GIB)
    assert check(cpu, laptop) == []
    assert "memory:" in check(cpu, node(gpus=[], mem_available_bytes=6 * GIB, mem_total_bytes=24 * GIB))[0]


def test_missing_local_checkpoint(tmp_path):
    cpu = config(source=str(tmp_path / "nope"), accelerator=None, tensor_parallel_size=1)
    assert "holds no checkpoint" in check(cpu, node(gpus=[]))[0]


def test_gpu_names_as_ray_labels_them():
    assert ray_gpu_type(*A100_40) == {"A100", "A100-40G"}
    assert ray_gpu_type("NVIDIA A100 80GB PCIe", 81920) == {"A100", "A100-80G"}
    assert ray_gpu_type(*H100) == {"H100"}
    assert ray_gpu_type("NVIDIA L40S", 46068) == {"L40S"}


def test_capacity_stops_70b_on_four_a100_40g():
    problems = check(config(tensor_parallel_size=4), node(gpus=[A100_40] * 4))
    assert len(problems) == 1 and problems[0].startswith("capacity: the KV cache holds"), problems
