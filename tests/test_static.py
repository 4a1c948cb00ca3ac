"""Fast checks of the notebook, the config files and the generated README; nothing is started."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from serve_plugins import cluster_env
from tutorial import facts

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
CODE = [c for c in NOTEBOOK.cells if c.cell_type == "code"]

SOURCE_CONFIG = dict(  # the values of the source tutorial, which the default must keep
    model_loading_config=dict(model_id="my-llama-3.1-70b", model_source="meta-llama/Llama-3.1-70B-Instruct"),
    accelerator_type="A100-40G",
    deployment_config=dict(autoscaling_config=dict(min_replicas=1, max_replicas=4)),
    engine_kwargs=dict(max_model_len=32768, tensor_parallel_size=8),
)


# Ray's Serve constants, as Ray computes them from the environment as it imports them. In a child process:
# Ray fixes its auth mode when imported (test_importing_the_helpers_does_not_import_ray).
CONSTANTS = """
import importlib, json, os, sys
env, names, modules = json.loads(sys.argv[1])
def read():
    found = {}
    for name in modules:
        try:
            module = importlib.reload(importlib.import_module(name))
        except Exception as e:  # a value Ray refuses is read too
            found[name] = repr(e)
            continue
        found.update({k: repr(v) for k, v in vars(module).items() if k.isupper()})
    return found
os.environ.update(env)
values = {"": read()}
for name in names:  # two values of each variable: Ray reads it if anything it computes differs
    os.environ[name] = "0"
    zero = read()
    os.environ[name] = "1"
    values[name] = zero != read()
    del os.environ[name]
print(json.dumps(values))
"""
SERVE_CONSTANTS = ("ray.serve._private.constants", "ray.llm._internal.serve.constants")


def _read_ray(env: dict, names: list, modules) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run([sys.executable, "-c", CONSTANTS, json.dumps([env, names, modules])], env=clean,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def ray_constants(env: dict, module: str | None = None) -> dict:
    """The constants Ray computes with `env` set."""
    return _read_ray(env, [], [module] if module else SERVE_CONSTANTS)[""]


def ray_ignores(names) -> set:
    """The variables among `names` that change nothing Ray's Serve constants compute: ones Ray does not read."""
    values = _read_ray({}, list(names), SERVE_CONSTANTS)
    return {name for name in names if not values[name]}


def test_notebook_validates():
    nbformat.validate(NOTEBOOK)


def test_notebook_is_committed_without_outputs():
    assert all(not c.outputs and c.execution_count is None for c in CODE)


def test_every_bash_cell_fails_on_any_error():
    bash = [c.source for c in CODE if c.source.startswith("%%bash")]
    assert len(bash) >= 5
    for src in bash:
        assert src.splitlines()[1] == "set -euo pipefail", src


def test_no_placeholders_in_code_cells():
    for c in CODE:
        assert not re.search(r"<[A-Za-z][\w -]*>", c.source), c.source


def test_the_contents_list_every_section():
    # That each entry's anchor leads to its heading is tests/test_rendered_pages.py's link check.
    heads = [c.source.splitlines()[0][3:] for c in NOTEBOOK.cells
             if c.cell_type == "markdown" and c.source.startswith("## ")]
    (contents,) = [c.source for c in NOTEBOOK.cells if c.cell_type == "markdown" and c.source.startswith("## Contents")]
    listed = re.findall(r"^- \[(.+)\]\(#([\w-]+)\)$", contents, re.M)
    assert [h for h, _ in listed] == [h for h in heads if h not in ("Overview", "Contents")]


def test_config_cell_is_the_file():
    (cell,) = [c for c in CODE if c.source.startswith("%%writefile serve_llama_3_1_70b.py\n")]
    body = cell.source.split("\n", 1)[1]
    assert body + "\n" == (ROOT / "serve_llama_3_1_70b.py").read_text()  # %%writefile adds the newline


def test_hidden_checks_are_in_place():
    checks = [c.metadata.get("nbmake", {}).get("post_cell_execute") for c in CODE]
    joined = "\n".join("\n".join(c) for c in checks if c)
    assert "'4' in _answer" in joined and "len(chunks) > 1" in joined


def test_account_cells_skip_execution():
    anyscale = [c for c in CODE if "anyscale" in c.source]
    assert len(anyscale) == 2
    for c in anyscale:
        assert "skip-execution" in c.metadata.get("tags", [])


def test_no_cell_puts_a_secret_on_a_command_line():
    # printf is a shell builtin: its arguments reach no process's command line.
    builtin = re.compile(r"""printf (%s|'[^']*') "\$\{?(HF_TOKEN|SERVE_API_KEY)""")
    for c in CODE:
        assert not re.search(r"\$\{?(HF_TOKEN|SERVE_API_KEY)", builtin.sub("", c.source)), c.source


def test_kubernetes_cells_skip_execution():
    # No cluster runs in the tests: tests/test_published_files.py checks the manifest offline.
    cells = [c for c in CODE if "kubectl" in c.source or "helm " in c.source]
    assert len(cells) == 4
    for c in cells:
        assert "skip-execution" in c.metadata.get("tags", []), c.source
    assert any("rayservice.yaml" in c.source for c in cells)


# Imports the module three ways and reports the configs. build_openai_app is replaced by a
# recorder: the real one connects to (or starts) a Ray cluster, which a static test must not.
DUMP = r"""
import importlib, json, os, ray, sys, yaml
import ray.serve.llm
from ray.serve.llm import LLMConfig
built = []
ray.serve.llm.build_openai_app = lambda cfg: built.append(cfg) or "app"
dump = lambda c: c.model_dump(mode="json", exclude={"callback_config"})  # holds a class
os.environ.pop("LLM_PROFILE", None); os.environ.pop("HF_TOKEN", None)
import serve_llama_3_1_70b as m
out = {"default": dump(m.llm_config), "app_built_from_config": built == [{"llm_configs": [m.llm_config]}] and m.app == "app"}
out["default_imports_tutorial"] = any(name.split(".")[0] == "tutorial" for name in sys.modules)
os.environ["HF_TOKEN"] = "hf_test_value"
out["with_token"] = dump(importlib.reload(m).llm_config)
del os.environ["HF_TOKEN"]; os.environ["LLM_PROFILE"] = "cpu"
out["cpu"] = dump(importlib.reload(m).llm_config)
(yaml_app,) = yaml.safe_load(open("serve_config.yaml"))["applications"]
out["yaml"] = dump(LLMConfig(**yaml_app["args"]["llm_configs"][0]))
out["ray_started"] = ray.is_initialized()
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def configs():
    out = subprocess.run([sys.executable, "-c", DUMP], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("JSON", 1)[1])


def _subset(actual: dict, expected: dict) -> dict:
    return {k: _subset(actual[k], v) if isinstance(v, dict) else actual[k] for k, v in expected.items()}


SCALING = ("max_ongoing_requests", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s")


def test_default_scales(configs):
    # Left out, Ray Serve LLM sets a target of a billion requests per replica: it never scales.
    deployment = configs["default"]["deployment_config"]
    auto = deployment["autoscaling_config"]
    for key in SCALING:
        assert (deployment if key == "max_ongoing_requests" else auto).get(key), key
    assert 0 < auto["target_ongoing_requests"] <= deployment["max_ongoing_requests"] < 1000


def test_the_notebook_starts_ray_in_the_shared_cluster_environment(tmp_path, monkeypatch):
    from serve_plugins import haproxy_files

    (cell,) = [c.source for c in CODE if "cluster_env.for_this_machine()" in c.source]
    monkeypatch.setattr(haproxy_files, "FOLDER", tmp_path / "haproxy")
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    environ: dict = {}
    # Its own `import os` left out, so the cell writes into `environ`, not this process's environment.
    exec(cell.replace("import os\n", ""), {"os": SimpleNamespace(environ=environ)})
    assert {k: environ[k] for k in cluster_env.SHARED} == cluster_env.SHARED
    assert environ["RAY_AUTH_MODE"] == "token" and environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert cluster_env.HOME in environ["PYTHONPATH"].split(os.pathsep)
    # A reader who exported 1 for a multi-node head keeps it.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    assert cluster_env.for_this_machine()["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"


def test_the_stream_deadline_covers_the_longest_answer_the_config_admits(configs):
    # HAProxy's old process outlives a reload this long; a slower or longer answer would be cut.
    longest_s = configs["default"]["engine_kwargs"]["max_model_len"] / cluster_env.SLOWEST_TOKENS_PER_S
    assert longest_s <= cluster_env.HARD_STOP_AFTER_S < 2 * longest_s
    # Its cost, as cluster_env.py states it: Ray keeps a stopped replica's ports out of use that long plus 30 s.
    quarantine = ray_constants({"RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": "777"})["RAY_SERVE_PORT_QUARANTINE_S"]
    assert quarantine == repr(777.0 + 30)


def test_haproxys_files_are_where_only_the_reader_can_enter(tmp_path, monkeypatch):
    from serve_plugins import haproxy_files

    monkeypatch.setattr(haproxy_files, "FOLDER", tmp_path / "haproxy")
    environ = haproxy_files.private_env()
    assert all(str(tmp_path) in v for v in environ.values())
    assert (tmp_path / "haproxy").stat().st_mode & 0o777 == 0o700
    (tmp_path / "haproxy").chmod(0o755)  # opened to others, by someone or something else: refused
    with pytest.raises(RuntimeError, match="mode 700"):
        haproxy_files.private_env()
    # Ray still reads each path from the environment by name.
    assert ray_ignores(environ) == set()
    # The launcher Ray starts as HAProxy, which only this account can change, runs the guard.
    launcher = Path(environ["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert launcher.stat().st_mode & 0o777 == 0o700 and "serve_plugins/haproxy_guard.py" in launcher.read_text()


def test_ray_still_reads_its_single_machine_switch():
    # The notebook keeps every Ray port on loopback with it; a renamed switch would open them without a word.
    name = ray_constants({}, module="ray._private.ray_constants")["ENABLE_RAY_CLUSTERS_ENV_VAR"]
    assert name == repr("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


def test_ray_still_reads_the_high_throughput_switches():
    # Ray reads each switch from the environment by name: one that Ray renamed or dropped would be
    # ignored without a word, and the deployment would fall back to the slow path (the benchmark
    # also reads the mode back from the running deployment).
    assert ray_ignores([*cluster_env.HIGH_THROUGHPUT, "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) == set()


def test_the_high_throughput_mode_still_holds_back_a_thousand_log_lines_per_replica():
    # Why a healthy replica's log is empty: the readiness check and Troubleshooting say 1,000 and how to see each line.
    assert ray_constants({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"})["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == "1000"


def test_haproxys_connection_limit_stays_set_while_the_gpu_stacks_ray_needs_it():
    # Ray 2.60, the CPU stack here, limits HAProxy to 4,096 connections itself; Ray 2.58.1 asks for 20,000,
    # about 50,000 open files. Once the GPU stack's Ray is 2.60 or later, cluster_env's setting can go.
    from packaging.version import Version

    assert ray_constants({})["RAY_SERVE_HAPROXY_MAXCONN"] == "4096"
    (gpu_ray,) = re.findall(r"^ray\[[\w,]+\]==([\d.]+)", (ROOT / "requirements-gpu.txt").read_text(), re.M)
    assert Version(gpu_ray) < Version("2.60"), "the GPU stack's Ray limits HAProxy itself: drop RAY_SERVE_HAPROXY_MAXCONN"
    assert cluster_env.HIGH_THROUGHPUT["RAY_SERVE_HAPROXY_MAXCONN"] == "4096"


def test_the_switches_reader_tells_a_switch_ray_reads_from_one_it_does_not():
    assert ray_ignores(["RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_NO_SUCH_SWITCH"]) == {"RAY_SERVE_NO_SUCH_SWITCH"}


def test_default_is_the_source_config(configs):
    assert _subset(configs["default"], SOURCE_CONFIG) == SOURCE_CONFIG
    assert not configs["default"]["runtime_env"]
    assert configs["default"]["placement_group_config"] is None
    assert configs["app_built_from_config"] and not configs["ray_started"]
    assert not configs["default_imports_tutorial"]  # the 70B default needs nothing of this repository


def test_the_deploy_file_imports_only_what_ray_needs():
    import ast

    from tutorial.profiles import DEFAULT

    source = (ROOT / "serve_llama_3_1_70b.py").read_text()
    top = [n for n in ast.parse(source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [ast.unparse(n) for n in top] == ["import os", "from ray.serve.llm import LLMConfig, build_openai_app"]
    assert f'os.environ.get("LLM_PROFILE", "{DEFAULT}") not in ("", "{DEFAULT}")' in source  # profiles.py's name


def test_the_token_stays_out_of_the_config(configs):
    # Ray writes a runtime_env's variables into its logs: the engine inherits HF_TOKEN from the
    # environment of `ray start` instead.
    assert "hf_test_value" not in json.dumps(configs["with_token"])
    assert configs["with_token"] == configs["default"]


def test_cpu_profile_keeps_the_served_name(configs):
    cpu = configs["cpu"]
    assert cpu["model_loading_config"]["model_id"] == "my-llama-3.1-70b"
    assert cpu["model_loading_config"]["model_source"].endswith(".models/SmolLM2-135M-Instruct")
    assert cpu["accelerator_type"] is None
    assert cpu["placement_group_config"] == {"bundles": [{"CPU": 1}]}
    assert cpu["engine_kwargs"]["tensor_parallel_size"] == 1
    assert cpu["engine_kwargs"]["max_model_len"] <= 4096


def test_unknown_profile_is_a_clear_error():
    from tutorial.profiles import apply_profile

    with pytest.raises(ValueError, match=r"LLM_PROFILE='tpu' is not one of \['70b', 'cpu'"):
        apply_profile({}, "tpu")
    config = {"engine_kwargs": {"tensor_parallel_size": 8}}
    assert apply_profile(config, "70b") is config and apply_profile(config, None) is config


def test_gpu_profile_needs_a_gpu(monkeypatch):
    from tutorial import gpus, profiles

    monkeypatch.setattr(gpus, "detect", lambda: [])
    with pytest.raises(ValueError, match="nvidia-smi reports no GPU"):
        profiles.apply_profile({}, "gpu")
    monkeypatch.setattr(gpus, "detect", lambda: [("NVIDIA H100 80GB HBM3", 81559)])
    config = dict(model_loading_config=dict(model_id="m"), deployment_config=dict(autoscaling_config={}))
    gpu = profiles.apply_profile(config, "gpu")
    # Any GPU Ray finds, and only the memory a 135M model needs.
    assert gpu["accelerator_type"] is None and gpu["engine_kwargs"]["tensor_parallel_size"] == 1
    assert gpu["engine_kwargs"]["kv_cache_memory_bytes"] == profiles.GIB
    assert gpu["engine_kwargs"]["gpu_memory_utilization"] <= 0.1
    assert gpu["model_loading_config"]["model_id"] == "m"


def test_rehearsal_profile_is_the_70b_shape_on_every_gpu(monkeypatch, tmp_path):
    from tutorial import gpus, profiles

    monkeypatch.setattr(gpus, "detect", lambda: [("NVIDIA H100 80GB HBM3", 81559)] * 2)
    monkeypatch.setattr(profiles, "ROOT", tmp_path)  # builds its model directory there
    base = dict(model_loading_config=dict(model_id="m"), deployment_config=dict(autoscaling_config=dict(max_replicas=4)))
    for profile, quant in (("rehearsal", None), ("rehearsal-fp8", "fp8")):
        out = profiles.apply_profile(base, profile)
        engine = out["engine_kwargs"]
        assert engine["tensor_parallel_size"] == 2 and engine["load_format"] == "dummy" and engine["max_model_len"] == 32768
        assert out["accelerator_type"] == "H100" and out["deployment_config"]["autoscaling_config"]["max_replicas"] == 4
        model = json.loads((Path(out["model_loading_config"]["model_source"]) / "config.json").read_text())
        real = json.loads((ROOT / "model_configs" / "llama-3.1-70b.json").read_text())
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
            assert model[key] == real[key], key
        assert (model.get("quantization_config") or {}).get("quant_method") == quant
        # Compiled without the all-reduce fusion that faults where NVLink multicast is unusable; fp8 runs eager.
        assert engine.get("enforce_eager") or engine["compilation_config"] == profiles.NO_MULTICAST_FUSION["compilation_config"]
        assert out["placement_group_config"] == {"bundle_per_worker": {"GPU": 1}, "strategy": "PACK"}
    monkeypatch.setenv("REHEARSAL_MAX_MODEL_LEN", "16384")
    assert profiles.apply_profile(base, "rehearsal")["engine_kwargs"]["max_model_len"] == 16384
    # Two nodes of one GPU each: one pipeline stage per node.
    monkeypatch.setenv("REHEARSAL_PIPELINE_PARALLEL_SIZE", "2")
    engine = profiles.apply_profile(base, "rehearsal-fp8")["engine_kwargs"]
    assert (engine["tensor_parallel_size"], engine["pipeline_parallel_size"]) == (1, 2)


def test_rehearsal_autoscale_profile_scales_two_gpu_replicas_by_the_70b_rule(monkeypatch, tmp_path):
    import capacity
    from tutorial import gpus, profiles

    monkeypatch.setattr(gpus, "detect", lambda: [("NVIDIA H200", 143771)] * 4)
    monkeypatch.setattr(profiles, "ROOT", tmp_path)
    base = dict(model_loading_config=dict(model_id="m"), deployment_config=dict(autoscaling_config=dict(max_replicas=4)))
    for profile, weights in (("rehearsal-autoscale", "bf16"), ("rehearsal-fp8-autoscale", "fp8")):
        out = profiles.apply_profile(base, profile)
        deployment, auto = out["deployment_config"], out["deployment_config"]["autoscaling_config"]
        assert out["engine_kwargs"]["tensor_parallel_size"] == 2 and (auto["min_replicas"], auto["max_replicas"]) == (1, 2)
        plan = capacity.plan(str(Path(out["model_loading_config"]["model_source"]) / "config.json"), "H200", 2,
                             max_model_len=8192, weight_dtype=weights)
        # Three quarters of the 8192-token requests one replica's KV cache holds; a new replica at half that.
        assert deployment["max_ongoing_requests"] == plan.kv_cache_tokens // 8192 * 3 // 4 > 20
        assert auto["target_ongoing_requests"] == deployment["max_ongoing_requests"] // 2
        assert auto["upscale_delay_s"] == 15 and auto["downscale_delay_s"] == 60


def test_service_yaml_names_the_app():
    service = yaml.safe_load((ROOT / "service.yaml").read_text())
    assert service["name"] == "deploy-llama-3-70b"
    assert service["image_uri"].startswith("anyscale/ray-llm:2.58.1-")  # the pinned GPU Ray
    (application,) = service["applications"]
    module, attr = application["import_path"].split(":")
    assert (ROOT / f"{module}.py").exists()
    assert re.search(rf"^{attr} = build_openai_app\(", (ROOT / f"{module}.py").read_text(), re.M)


def test_gpu_requirements_pin_the_image_ray():
    assert "ray[serve,llm]==2.58.1" in (ROOT / "requirements-gpu.txt").read_text()


def test_serve_config_matches_the_python_config(configs):
    (application,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    assert application["import_path"] == "ray.serve.llm:build_openai_app"
    # The same LLMConfig, field for field.
    assert configs["yaml"] == configs["default"]


def test_readme_matches_a_fresh_render():
    out = subprocess.run([sys.executable, "scripts/render_readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_docs_pages_match_a_fresh_render():
    out = subprocess.run([sys.executable, "-m", "lab", "render", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert blocks[0].splitlines() == ["bash scripts/tutorial.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_no_token_in_committed_outputs():
    # Hugging Face tokens start with hf_; Ray's cluster token is 64 hex characters; an API key
    # shows up as a literal bearer token or OpenAI-style sk- key. (The reliability test's random
    # key is checked against Ray's logs there.)
    pattern = re.compile(r"\bhf_[A-Za-z0-9]{20,}|\b[0-9a-f]{64}\b|Bearer [A-Za-z0-9_\-]{16,}|\bsk-[A-Za-z0-9]{20,}")
    outputs = [ROOT / "README.md", ROOT / "notebook.ipynb", *sorted(p for p in (ROOT / "docs").glob("*") if p.is_file()),
               *sorted((ROOT / "docs" / "results").glob("*"))]
    for path in outputs:
        text = re.sub(r'"notebook_sha256": "[0-9a-f]{64}"', "", path.read_bytes().decode(errors="replace"))
        assert not pattern.search(text), path  # plots too; a results file's notebook hash is no token


def test_the_cells_write_the_facts_the_helpers_use():
    code = "\n".join(c.source for c in CODE)

    def found(pattern: str) -> set[str]:
        hits = {g for m in re.finditer(pattern, code) for g in m.groups() if g}
        assert hits, pattern
        return hits

    assert found(r'model(?:_id)?="([^"]+)"|"model": "([^"]+)"') == {facts.MODEL_ID}
    assert found(r"127\.0\.0\.1:(\d+)/v1") == {str(facts.HTTP_PORT)}
    assert found(r'--http-host "\$\{SERVE_HTTP_HOST:-([^}]+)\}"') == {facts.HTTP_HOST}
    assert found(r"--metrics-export-port (\d+)|127\.0\.0\.1:(\d+)/metrics") == {str(facts.METRICS_PORT)}
    assert found(r'READY_TIMEOUT_S:-(\d+)|"READY_TIMEOUT_S", (\d+)') == {str(facts.READY_TIMEOUT_S)}
    assert found(r"> (\d+) \? \$\(nproc\) : (\d+)") == {str(facts.MIN_CPUS)}


def test_importing_the_helpers_does_not_import_ray():
    """Ray reads RAY_AUTH_MODE once, when imported: a helper that imports it at the top would fix
    the mode before a test or a cell sets it (pytest imports every test module first)."""
    code = ("import sys; import lab.multinode, lab.bench, tutorial.placement, tutorial.preflight, tutorial.ready, "
            "tutorial.autoscaling, tutorial.metrics, tutorial.teardown; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_collecting_the_tests_does_not_import_ray():
    """pytest imports every test module before the first test runs: one that imports Ray at its top would
    fix Ray's auth mode to disabled for the whole run, and every later in-process call to a token cluster fails."""
    code = ("import importlib, pathlib, sys; sys.path[:0] = ['tests', '.']; "
            "[importlib.import_module(p.stem) for p in sorted(pathlib.Path('tests').glob('test_*.py'))]; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))[:3])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1:] == ["[]"], out.stdout[-2000:] + out.stderr[-2000:]


# Runs VLLMEngine.start as Ray wrote it up to the engine's own config, with its edges replaced: the
# placement group (which would start a Ray cluster), the node initialisation task (recorded, not run)
# and the engine config (which stops the start). Prints whether the task ran, for each profile.
NODE_INIT = r"""
import asyncio, sys, ray, ray.serve.llm
ray.serve.llm.build_openai_app = lambda cfg: "app"  # the real one starts a Ray cluster
from ray.llm._internal.serve.engines.vllm import vllm_engine, vllm_models
from ray.serve.llm import LLMConfig
from serve_llama_3_1_70b import config
from tutorial.profiles import apply_profile
ran = []
class Stop(Exception): pass
async def initialize_node(llm_config): ran.append(llm_config)
def prepare_engine_config(self, ctx): raise Stop
for owner, name, stub in [(vllm_engine, "initialize_node", initialize_node),
                          (vllm_engine.VLLMEngine, "_prepare_engine_config", prepare_engine_config),
                          (vllm_models.VLLMEngineConfig, "get_or_create_pg", lambda self: None)]:
    assert hasattr(owner, name), f"Ray no longer has {name}"
    setattr(owner, name, stub)
for profile in sys.argv[1:]:
    ran.clear()
    try:
        asyncio.run(vllm_engine.VLLMEngine(LLMConfig(**apply_profile(config, profile))).start())
    except Stop:
        pass
    print(profile, bool(ran))
print("ray_started", ray.is_initialized())
"""


def test_the_profiles_skip_node_initialisation_and_ray_still_reads_the_switch():
    """The profiles' callback turns Ray Serve LLM's node initialisation task off. Were the switch
    renamed, the callback would set a field nothing reads, and every start would be slower again.
    The 70B's own config is the control: Ray runs the task for it."""
    out = subprocess.run([sys.executable, "-c", NODE_INIT, "cpu", "70b"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "LLM_PROFILE": "70b"})
    assert out.stdout.splitlines()[-3:] == ["cpu False", "70b True", "ray_started False"], \
        out.stdout[-2000:] + out.stderr[-2000:]


def test_the_speed_table_is_its_results_file():
    # The README shows the figures and what they were measured on, regenerated from the file it names.
    from tutorial.bench_table import label, table

    (cell,) = [c.source for c in NOTEBOOK.cells if c.source.startswith("## How fast is it?")]
    (path,) = re.findall(r"\(docs/results/(bench-[\w-]+\.json)\)", cell)
    bench = json.loads((ROOT / "docs" / "results" / path).read_text())
    assert table(bench) in cell and label(bench) in cell


@pytest.mark.parametrize("name", ["scale-to-zero-cpu", "scale-to-zero-70b-h100"])
def test_the_scale_to_zero_section_gives_the_measured_first_request(name):
    z = json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text())
    (cell,) = [c.source for c in NOTEBOOK.cells if c.source.startswith("### Scale to zero")]
    assert f"a burst of {z['burst']['clients']} streaming requests got its first chunk after " \
           f"{z['burst']['first_ttft_s']:.0f} s" in cell
    assert z["burst"]["answered"] == z["burst"]["clients"] and "Every request was answered" in cell
    assert z["replicas_seen"] == [1, 0, 1, 0] and z["status_without_key"] == 401 and "`401`" in cell
