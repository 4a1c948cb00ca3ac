"""Check this machine against the chosen LLMConfig before anything starts.

A config that cannot run here should fail in seconds with the reason, not after a launch that
waits forever for GPUs that never appear. Run: python -m tutorial.preflight
"""

import ast
import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import capacity
from tutorial import gpus, teardown
from tutorial.facts import HAPROXY_SIDE_DOORS, HTTP_PORT, METRICS_PORT, RAY_PORT
from tutorial.gpus import ray_gpu_type

GIB = 1024**3
GATED_ORGS = ("meta-llama/",)  # Hugging Face refuses these weights without an accepted licence
# Configs capacity.py ships for the Hugging Face names the tutorial deploys.
PLANNER_MODELS = {
    "meta-llama/Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "unsloth/Meta-Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b",
}
# HAProxy does not start when its statistics or metrics port is taken.
PORTS = {HTTP_PORT: "Ray Serve's HTTP endpoint", RAY_PORT: "a Ray head node", METRICS_PORT: "Ray's metrics endpoint",
         **dict(zip(HAPROXY_SIDE_DOORS, ("HAProxy's statistics page", "HAProxy's metrics")))}


@dataclass
class Node:
    """A node of a running Ray cluster, as Ray's scheduler sees it."""
    address: str
    gpus: int
    gpu_types: set[str]  # Ray's accelerator_type labels, e.g. {"A100", "A100-40G"}


@dataclass
class Machine:
    gpus: list[tuple[str, int]] = field(default_factory=list)  # (name, memory MiB) per GPU
    # The Ray cluster this machine is part of; None when none runs, and then the local GPUs count.
    cluster: list[Node] | None = None
    disk_free_bytes: int = 0  # where downloaded weights go
    mem_available_bytes: int = 0
    mem_total_bytes: int = 0
    hf_token_set: bool = False
    busy_ports: dict[int, str] = field(default_factory=dict)  # port -> who holds it


def deployment(cfg) -> dict:
    """The config's deployment_config, {} when it has none."""
    return getattr(cfg, "deployment_config", None) or {}


def autoscaling(cfg) -> dict:
    return deployment(cfg).get("autoscaling_config") or {}


def uses_gpus(cfg) -> bool:
    """False for an engine placed on CPUs only (bundles that ask for CPUs and no GPU)."""
    bundles = (getattr(cfg, "placement_group_config", None) or {}).get("bundles")
    return not bundles or any(b.get("GPU") for b in bundles)


def gpu_kind(cfg) -> str:
    """The GPUs the config asks Ray for: a type, or any (no accelerator_type: Ray takes what it finds)."""
    return cfg.accelerator_type or "GPU of any type"


def cluster_gpus(cfg, cluster: list[Node]) -> int:
    """GPUs of the config's accelerator_type (any, when it sets none) on all of the cluster's nodes."""
    return sum(n.gpus for n in cluster if not cfg.accelerator_type or cfg.accelerator_type in n.gpu_types)


def cluster_problems(cfg, cluster: list[Node], gpus_per_replica: int) -> list[str]:
    """The cluster's GPUs of the configured type against what min_replicas replicas need; the
    message names every node and what it has, so a node that never joined, or joined with
    another GPU type, shows."""
    replicas = autoscaling(cfg).get("min_replicas", 1) or 1
    have = cluster_gpus(cfg, cluster)
    if have >= gpus_per_replica * replicas:
        return []
    nodes = "; ".join(
        f"{n.address}: " + (f"{n.gpus} x {'/'.join(sorted(n.gpu_types)) or 'GPU of no known type'}" if n.gpus else "no GPU")
        for n in cluster)
    return [f"GPUs: the config needs {gpus_per_replica * replicas} x {gpu_kind(cfg)} (tensor_parallel_size x "
            f"pipeline_parallel_size x min_replicas {replicas}); the Ray cluster's {len(cluster)} node(s) have {have} "
            f"({nodes}). Start the missing worker nodes with `ray start --address=<head>:6379` on machines with "
            f"{gpu_kind(cfg)}s, or change accelerator_type."]


def weights_bytes(model_source: str) -> int:
    """Bytes of weights to fetch: 0 for a local checkpoint, else bf16 size from the name's "70B"."""
    if Path(model_source).is_dir():
        return 0
    m = re.search(r"(\d+(?:\.\d+)?)B\b", model_source)
    return int(float(m.group(1)) * 1e9 * 2 * 1.05) if m else 0  # 2 bytes a parameter, plus tokenizer etc.


def check(cfg, machine: Machine) -> list[str]:
    """Problems that stop `cfg` (an LLMConfig) from running on `machine`; empty when it fits."""
    problems = []
    engine = cfg.engine_kwargs or {}
    source = cfg.model_loading_config.model_source
    gpus_needed = engine.get("tensor_parallel_size", 1) * engine.get("pipeline_parallel_size", 1)

    if uses_gpus(cfg) and machine.cluster is not None:
        problems += cluster_problems(cfg, machine.cluster, gpus_needed)
    elif uses_gpus(cfg):
        matching = [g for g in machine.gpus if not cfg.accelerator_type or cfg.accelerator_type in ray_gpu_type(*g)]
        if len(matching) < gpus_needed:
            found = ", ".join(sorted({n for n, _ in machine.gpus})) or "no NVIDIA GPU"
            problems.append(
                f"GPUs: the config needs {gpus_needed} x {gpu_kind(cfg)} "
                f"(tensor_parallel_size x pipeline_parallel_size); this machine has {len(matching)} "
                f"({found}). Set accelerator_type to your GPU and tensor_parallel_size to at most "
                f"its count, or run the small model on a CPU with LLM_PROFILE=cpu."
            )
    if cfg.accelerator_type in capacity.GPUS:
        problems += capacity_problems(cfg)
    problems += scaling_problems(deployment(cfg))
    if Path(source).is_absolute() and not Path(source, "config.json").exists():
        problems.append(f"model: {source} holds no checkpoint; build it with `python -m tutorial.small_model`.")

    need_disk = weights_bytes(source)
    if need_disk > machine.disk_free_bytes:
        problems.append(
            f"disk: the weights take about {need_disk / GIB:.0f} GiB and the Hugging Face cache has "
            f"{machine.disk_free_bytes / GIB:.0f} GiB free; free space or point HF_HOME at a bigger disk."
        )

    if uses_gpus(cfg):
        need_mem = (4 + 3 * gpus_needed) * GIB  # Ray, the ingress and one engine process per GPU
    else:  # the CPU engine keeps its KV cache in RAM, beside about 3 GiB of its own, per replica
        kv = engine.get("kv_cache_memory_bytes") or int(engine.get("gpu_memory_utilization", 0.9) * machine.mem_total_bytes)
        need_mem = 2 * GIB + autoscaling(cfg).get("max_replicas", 1) * (kv + 3 * GIB)
    if need_mem > machine.mem_available_bytes:
        problems.append(
            f"memory: the deployment needs about {need_mem / GIB:.0f} GiB of RAM and "
            f"{machine.mem_available_bytes / GIB:.0f} GiB is available; stop other programs."
        )

    if source.startswith(GATED_ORGS) and not machine.hf_token_set:
        problems.append(
            f"HF_TOKEN: {source} is gated. Accept its licence on Hugging Face, then export "
            f"HF_TOKEN before starting Jupyter (or use the ungated copy named in the config)."
        )

    for port, owner in machine.busy_ports.items():
        problems.append(
            f"port {port}: already in use by {owner}, not by a Ray cluster this tutorial started; it needs the "
            f"port for {PORTS[port]}. Nothing was touched: stop that program if it is yours to stop, "
            f"or run the tutorial on another machine."
        )
    return problems


def weight_dtype(cfg, model_config: dict) -> str:
    """"fp8" for fp8 weights, whether the checkpoint holds them or vLLM quantizes at load."""
    quant = (model_config.get("quantization_config") or {}).get("quant_method")
    return "fp8" if "fp8" in {quant, (cfg.engine_kwargs or {}).get("quantization")} else "bf16"


def capacity_problems(cfg) -> list[str]:
    """capacity.py's verdict on the weights and KV cache, for a model whose config it has; when
    they do not fit, what would: a shorter max_model_len, or fp8 weights."""
    source = cfg.model_loading_config.model_source
    model = PLANNER_MODELS.get(source) or str(Path(source, "config.json"))
    if not Path(model).is_file() and model not in capacity.MODELS:
        return []  # no config to plan with: vLLM itself will tell
    engine = cfg.engine_kwargs or {}
    args = dict(
        tensor_parallel_size=engine.get("tensor_parallel_size", 1),
        pipeline_parallel_size=engine.get("pipeline_parallel_size", 1),
        max_model_len=engine.get("max_model_len", 8192),
        gpu_memory_utilization=engine.get("gpu_memory_utilization", capacity.DEFAULT_GPU_MEMORY_UTILIZATION),
        weight_dtype=weight_dtype(cfg, capacity.load_model(model)[1]),
    )
    try:
        p = capacity.plan(model, cfg.accelerator_type, **args)
    except capacity.PlanError as e:
        return [f"parallelism: {e}"]
    if p.fits:
        return []
    offers = []
    # A 3% margin, the planner's error in most validated runs (docs/results/capacity-validation.json),
    # in whole 1024-token steps.
    longest = int(p.kv_cache_tokens * 0.97) // 1024 * 1024
    if longest >= 1024:
        offers.append(f"max_model_len {longest} fits")
    if p.weight_dtype == "bf16" and capacity.plan(model, cfg.accelerator_type, **{**args, "weight_dtype": "fp8"}).fits:
        offers.append(f"fp8 weights fit at {p.max_model_len}")
    offer = f" What fits: {'; '.join(offers)}." if offers else ""
    return [f"capacity: {p.reason}.{offer} (python capacity.py --model {p.model} --gpu {p.gpu} "
            f"--tensor-parallel-size {p.tensor_parallel_size} --max-model-len {p.max_model_len}"
            f"{' --weight-dtype fp8' if p.weight_dtype == 'fp8' else ''})"]


def scaling_problems(deployment: dict) -> list[str]:
    """Autoscaling settings Serve would accept but that can never scale as meant."""
    auto = deployment.get("autoscaling_config") or {}
    problems = []
    target, most = auto.get("target_ongoing_requests"), deployment.get("max_ongoing_requests")
    if target is not None and target <= 0:
        problems.append(f"autoscaling: target_ongoing_requests is {target}; set it to the requests in "
                        f"flight per replica at which to add one (above 0).")
    if target is not None and most is not None and most < target:
        problems.append(f"autoscaling: max_ongoing_requests {most} is below target_ongoing_requests {target}, so "
                        f"a replica never gets enough requests to scale; raise max_ongoing_requests to at least {target}.")
    low, high = auto.get("min_replicas", 1), auto.get("max_replicas", 1)
    if high < low:
        problems.append(f"autoscaling: max_replicas {high} is below min_replicas {low}; raise max_replicas to at least {low}.")
    return problems


def pending_replicas(cfg, machine: Machine) -> str | None:
    """A warning when max_replicas asks for more GPUs than this node has: the extra replicas
    would wait in PENDING for GPUs that never come (fine on a cluster that adds nodes)."""
    engine = cfg.engine_kwargs or {}
    per_replica = engine.get("tensor_parallel_size", 1) * engine.get("pipeline_parallel_size", 1)
    high = autoscaling(cfg).get("max_replicas", 1)
    have = len(machine.gpus) if machine.cluster is None else cluster_gpus(cfg, machine.cluster)
    if not uses_gpus(cfg) or high * per_replica <= have:
        return None
    fit = have // per_replica
    where = f"this node has {have}" if machine.cluster is None else f"the Ray cluster has {have} of type {gpu_kind(cfg)}"
    return (f"replicas: max_replicas {high} x {per_replica} GPUs needs {high * per_replica} GPUs and {where}: under load {high - fit} replica(s) would stay PENDING until nodes with "
            f"{gpu_kind(cfg)}s join the cluster.")


def busy_ports() -> dict[int, str]:
    """The tutorial's ports that something other than its own Ray cluster holds, and who."""
    mine = {p.pid for p in teardown.ours()}
    busy = {}
    for port in PORTS:
        if _port_busy(port):
            owner = teardown.listener(port)
            if owner is None or owner.pid not in mine:
                busy[port] = teardown.describe(owner)
    return busy


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def cluster_nodes() -> list[Node] | None:
    """The alive nodes of the Ray cluster running here (RAY_ADDRESS, or a head started on this
    machine), read from Ray's scheduler; None when no cluster runs. Never starts one."""
    if not (os.environ.get("RAY_ADDRESS") or Path("/tmp/ray/ray_current_cluster").exists()):
        return None
    import ray

    try:
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), logging_level="ERROR", log_to_driver=False)
    except ConnectionError:  # a stale address file: the cluster is gone
        return None
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
    return [Node(address=n["NodeManagerAddress"] + (" (head)" if n["Resources"].get("node:__internal_head__") else ""),
                 gpus=int(n["Resources"].get("GPU", 0)),
                 gpu_types={k.split(":", 1)[1] for k in n["Resources"] if k.startswith("accelerator_type:")})
            for n in nodes]


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)}


def probe() -> Machine:
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    existing = next(p for p in [hf_home, *hf_home.parents] if p.exists())
    mem = _meminfo()
    cluster = cluster_nodes()
    return Machine(
        gpus=gpus.detect(),
        cluster=cluster,
        disk_free_bytes=shutil.disk_usage(existing).free,
        mem_available_bytes=mem["MemAvailable"],
        mem_total_bytes=mem["MemTotal"],
        hf_token_set=bool(os.environ.get("HF_TOKEN")) or (hf_home / "token").exists(),
        busy_ports=busy_ports(),
    )


def load_llm_config(path: Path = Path("serve_llama_3_1_70b.py")):
    """The deploy file's llm_config, from its own statements up to the app: building the app would
    connect to a Ray cluster and, when none runs, start a throwaway one (Ray 2.58-2.60), which also
    writes ~/.ray/auth_token and so turns on token auth for the clusters started after it."""
    tree = ast.parse(path.read_text(), str(path))
    (last,) = [i for i, node in enumerate(tree.body) if isinstance(node, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == "llm_config" for t in node.targets)]
    tree.body = tree.body[:last + 1]
    scope = {"__name__": path.stem, "__file__": str(path)}
    exec(compile(tree, str(path), "exec"), scope)
    return scope["llm_config"]


def serve_config_llm_config(path: str):
    """The LLM config of a Serve config file (`serve deploy`'s input), checked by Ray's own schema."""
    from ray.serve.llm import LLMConfig

    (app,) = yaml.safe_load(Path(path).read_text())["applications"]
    (llm,) = app["args"]["llm_configs"]
    return LLMConfig(**llm)


def main(argv: list[str]) -> int:
    # Before Ray is imported (reading the config imports it): a cluster this notebook started listens on
    # loopback only, and without Ray's single-machine switch a driver looks for it at this host's outside
    # address and retries there without end (a second Run All, or a kernel restart, runs this cell before
    # the cluster's environment). A head that other nodes join exported 1, which stays.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # --serve-config FILE checks that file, as `serve deploy FILE` would run it, instead of serve_llama_3_1_70b.py.
    llm_config = serve_config_llm_config(argv[argv.index("--serve-config") + 1]) if "--serve-config" in argv \
        else load_llm_config()
    machine = probe()
    engine = llm_config.engine_kwargs
    print(f"profile:     {os.environ.get('LLM_PROFILE') or '(unset: the 70B default)'}")
    print(f"model:       {llm_config.model_loading_config.model_id} <- {llm_config.model_loading_config.model_source}")
    print(f"accelerator: {gpu_kind(llm_config) if uses_gpus(llm_config) else 'none (CPU)'}, tensor_parallel_size "
          f"{engine.get('tensor_parallel_size', 1)} x pipeline_parallel_size {engine.get('pipeline_parallel_size', 1)}, "
          f"max_model_len {engine.get('max_model_len')}")
    print(f"this node:   {len(machine.gpus)} GPU(s) {sorted({n for n, _ in machine.gpus})}, "
          f"{machine.mem_available_bytes / GIB:.0f} GiB RAM available, {machine.disk_free_bytes / GIB:.0f} GiB disk free")
    if machine.cluster is not None:
        print(f"Ray cluster: {len(machine.cluster)} node(s): " + "; ".join(
            f"{n.address} {n.gpus} GPU(s) {'/'.join(sorted(n.gpu_types))}" for n in machine.cluster))
    print(f"HF_TOKEN:    {'set (not shown)' if machine.hf_token_set else 'not set'}")
    problems = check(llm_config, machine)
    if warning := pending_replicas(llm_config, machine):
        print(f"WARN {warning}")
    for p in problems:
        print(f"FAIL {p}")
    print("preflight: all checks passed" if not problems else f"preflight: {len(problems)} problem(s); fix them before launching")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
