"""The GPU runner's pieces, checked without a GPU: the workflow, the wheelhouse, the scripts, and each GPU-only
experiment of the lab in its smoke mode on the CPU (the same code path, the small model, the smallest sizes)."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from ci import wheelhouse

ROOT = Path(__file__).resolve().parent.parent

WORKFLOW = yaml.safe_load((ROOT / ".github/workflows/gpu-notebook.yml").read_text())


def test_workflow_calls_only_scripts_that_exist():
    for name, job in WORKFLOW["jobs"].items():
        runs = [s["run"] for s in job["steps"] if "run" in s]
        for run in runs:
            for script in re.findall(r"\b(ci/[\w./-]+)", run):
                assert (ROOT / script).is_file(), f"{name}: {script}"
        assert "bash ci/gpu_notebook.sh" in runs and "bash ci/gpu_cleanup.sh" in runs


def test_workflow_always_tears_down_and_uploads():
    for job in WORKFLOW["jobs"].values():
        always = [s for s in job["steps"] if s.get("if") == "always()"]
        assert [s.get("run") for s in always][0] == "bash ci/gpu_cleanup.sh"
        assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in always)
        assert job["timeout-minutes"] > 0


def test_workflow_gpu_profile_and_70b_job():
    small, big = WORKFLOW["jobs"]["small-model-one-gpu"], WORKFLOW["jobs"]["llama-70b-eight-gpus"]
    assert small["env"]["LLM_PROFILE"] == "gpu"
    assert big["env"]["LLM_PROFILE"] == "70b" and "gpu-8x" in big["runs-on"]


def _where(node, path=""):
    """(path, text) of every string in the workflow."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _where(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _where(v, f"{path}[{(v.get('name') or i) if isinstance(v, dict) else i}]")
    elif isinstance(node, str):
        yield path, node


def test_no_pull_request_reaches_the_self_hosted_runner():
    # A fork's pull request would run its code on the host that later holds HF_TOKEN.
    triggers = WORKFLOW.get("on", WORKFLOW.get(True))  # YAML 1.1 reads the key `on` as True
    assert not {"pull_request", "pull_request_target"} & set(triggers), triggers


def test_the_token_reaches_only_the_step_that_downloads_the_weights():
    uses = [path for path, text in _where(WORKFLOW) if "secrets." in text]
    assert uses == [".jobs.llama-70b-eight-gpus.steps[Run the notebook under nbmake].env.HF_TOKEN"], uses


def test_gpu_jobs_queue_on_one_concurrency_group_and_are_never_cancelled_mid_run():
    assert WORKFLOW["concurrency"] == {"group": "gpu-runner", "cancel-in-progress": False}
    assert not [name for name, job in WORKFLOW["jobs"].items() if "concurrency" in job]


def _step_names(job: dict) -> list[str]:
    return [s.get("run", s.get("uses", "")) for s in job["steps"]]


def test_each_job_first_stops_a_cluster_an_earlier_job_leaked():
    # The checkout cleans the working tree, so the record of our sessions lives outside it.
    assert WORKFLOW["env"]["TUTORIAL_CLUSTER_RECORD"].startswith("~/")
    for name, job in WORKFLOW["jobs"].items():
        runs = _step_names(job)
        assert runs.index("bash ci/gpu_setup.sh") < runs.index("python3 -m tutorial.teardown") \
            < runs.index("bash ci/gpu_notebook.sh"), name
    record = subprocess.run([sys.executable, "-c", "from tutorial import teardown; print(teardown.RECORD)"],
                            cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "TUTORIAL_CLUSTER_RECORD": WORKFLOW["env"]["TUTORIAL_CLUSTER_RECORD"]})
    assert record.stdout.strip() == str(Path.home() / ".cache/ray-serve-llm-tutorial/cluster.json")


def test_the_70b_job_runs_on_the_gpu_type_its_input_names(tmp_path, monkeypatch):
    big = WORKFLOW["jobs"]["llama-70b-eight-gpus"]
    triggers = WORKFLOW.get("on", WORKFLOW.get(True))
    assert triggers["workflow_dispatch"]["inputs"]["accelerator_type"]["default"] == "A100-40G"
    assert big["env"]["ACCELERATOR_TYPE"] == "${{ inputs.accelerator_type }}"  # env, never spliced into a script
    runs = _step_names(big)
    assert runs.index('python3 ci/set_accelerator.py "$ACCELERATOR_TYPE"') < runs.index("bash ci/gpu_notebook.sh")

    from ci import set_accelerator

    for name in ("serve_llama_3_1_70b.py", "notebook.ipynb"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.setattr(set_accelerator, "DEPLOY_FILE", tmp_path / "serve_llama_3_1_70b.py")
    monkeypatch.setattr(set_accelerator, "NOTEBOOK", tmp_path / "notebook.ipynb")
    assert set_accelerator.main(['H100"\nimport os']) == 2  # a crafted input changes nothing
    assert set_accelerator.main(["H100"]) == 0
    for name in ("serve_llama_3_1_70b.py", "notebook.ipynb"):
        before, after = (ROOT / name).read_text().splitlines(), (tmp_path / name).read_text().splitlines()
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(before) == len(after) and len(changed) == 1, (name, changed)
        assert "A100-40G" in changed[0][0] and changed[0][1] == changed[0][0].replace("A100-40G", "H100")


def _fake_wheel(folder: Path, name: str, body: str) -> None:
    with zipfile.ZipFile(folder / f"{name}-0.0-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{name}/__init__.py", f"__version__ = '0.0'\n{body}")
        whl.writestr(f"{name}-0.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0\n")
        whl.writestr(f"{name}-0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{name}-0.0.dist-info/RECORD", "")


@pytest.mark.parametrize("gpus", [0, 1])
def test_the_runners_offline_setup_provides_python_and_stops_without_a_gpu(tmp_path, gpus):
    # The wheelhouse branch on a runner with python3 but no `python`: stand-ins for ray, vllm and
    # torch, whose torch sees `gpus` GPUs.
    repo, wheels = tmp_path / "repo", tmp_path / "wheels"
    shutil.copytree(ROOT / "ci", repo / "ci")
    wheels.mkdir()
    for name in ("ray", "vllm"):
        _fake_wheel(wheels, name, "")
    _fake_wheel(wheels, "torch", f"class cuda:\n    device_count = staticmethod(lambda: {gpus})\n")
    wheelhouse.main(["pack", "--wheels", str(wheels), "--out", str(tmp_path / "parts"), "--part-mib", "1"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mkdir", "chmod"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    out = subprocess.run(["bash", "ci/gpu_setup.sh"], cwd=repo, capture_output=True, text=True, timeout=300,
                         env={"PATH": str(bin_dir), "WHEELHOUSE_PARTS": str(tmp_path / "parts")})
    assert (repo / ".gpu-site/bin/python").is_file(), out.stdout + out.stderr
    assert f"GPUs {gpus}" in out.stdout, out.stdout + out.stderr
    assert (out.returncode, "sees no GPU" in out.stderr) == ((1, True) if gpus == 0 else (0, False)), out.stderr


def _random_files(folder: Path, sizes: list[int]) -> dict[str, bytes]:
    folder.mkdir()
    files = {}
    for i, size in enumerate(sizes):
        data = bytes((i * 7 + j * 13) % 251 for j in range(size))
        (folder / f"pkg{i}-1.0-py3-none-any.whl").write_bytes(data)
        files[f"pkg{i}-1.0-py3-none-any.whl"] = data
    return files


def _pack(tmp_path: Path, sizes: list[int]) -> tuple[dict[str, bytes], Path]:
    files = _random_files(tmp_path / "wheels", sizes)
    wheelhouse.main(["pack", "--wheels", str(tmp_path / "wheels"), "--out", str(tmp_path / "parts"), "--part-mib", "1"])
    return files, tmp_path / "parts"


def test_pack_splits_and_unpack_reassembles(tmp_path):
    files, parts = _pack(tmp_path, [1_500_000, 900_000, 10])
    manifest = json.loads((parts / "wheelhouse.json").read_text())
    assert len(manifest["parts"]) == 3  # 2.4 MB of tar in parts of 1 MiB
    assert all((parts / p).stat().st_size <= 2**20 for p in manifest["parts"])
    out = wheelhouse.unpack(parts, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in out} == files


def test_unpack_refuses_a_corrupt_or_missing_part(tmp_path):
    _, parts = _pack(tmp_path, [1_500_000])
    first = parts / "wheelhouse.tar.part000"
    first.write_bytes(b"x" + first.read_bytes()[1:])
    with pytest.raises(SystemExit, match="do not match the packed checksum"):
        wheelhouse.unpack(parts, tmp_path / "out")
    first.unlink()
    with pytest.raises(SystemExit, match="missing parts"):
        wheelhouse.unpack(parts, tmp_path / "out2")


def test_leaves_out_what_the_runner_has():
    has = wheelhouse.read_pins(ROOT / "ci/gpu-runner-has.txt")
    assert has["torch"] == "2.11.0"  # what vllm 0.26.0 pins
    assert wheelhouse.skipped("nixl-cu13") and wheelhouse.skipped("tokenspeed-mla")
    assert not wheelhouse.skipped("vllm") and not wheelhouse.skipped("ray")


def test_gpu_scripts_are_valid_bash():
    for script in ["ci/gpu_setup.sh", "scripts/gpu_setup.sh", "ci/gpu_notebook.sh", "ci/gpu_cleanup.sh", "ci/multinode.sh",
                   "scripts/setup_venv.sh", "scripts/tutorial.sh", "scripts/test.sh", "lab/prometheus.sh"]:
        subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def test_gpu_only_scripts_call_the_benchmark_as_it_is_now():
    # A call to bench.sweep that no longer binds to its signature, or a benchmark choice the CLI no longer
    # offers, fails here instead of on a GPU node.
    import ast
    import inspect

    from lab import EXPERIMENTS, bench

    signature = inspect.signature(bench.sweep)
    for path in sorted((ROOT / "lab").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "bench.sweep":
                signature.bind(*node.args, **{k.arg: None for k in node.keywords})  # TypeError when they drift
    for path in [*sorted((ROOT / "ci").glob("*.sh")), *sorted((ROOT / ".github/workflows").glob("*.yml"))]:
        text = path.read_text()
        assert set(re.findall(r"python -m lab run ([\w-]+)", text)) <= set(EXPERIMENTS), path.name
        for call in re.findall(r"python -m lab run bench ((?:[^\n]|\\\n)*)", text):
            for option, choices in (("--ray-configs", bench.RAY_CONFIGS), ("--models", {*bench.MODELS, *bench.REHEARSALS})):
                if m := re.search(rf"{option} ((?:[a-z0-9][\w-]* ?)+)", call):
                    assert set(m.group(1).split()) <= set(choices), (path.name, option, m.group(1))


def lab_smoke(name: str, results: Path, *options: str, timeout: int = 900) -> None:
    run = subprocess.run([sys.executable, "-m", "lab", "run", name, "--smoke", "--results", str(results), *options],
                         cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.deploys
def test_the_planners_check_runs_on_the_cpu_and_reads_vllms_kv_cache(tmp_path):
    lab_smoke("capacity", tmp_path)
    (case,) = json.loads((tmp_path / "capacity-validation.json").read_text())["cases"]
    assert case["model"] == "smollm2-135m" and case["vllm_kv_tokens"] > 0 and case["vllm_max_concurrency"] > 0


@pytest.mark.deploys
def test_graph_capture_starts_its_engine_on_the_cpu_and_reads_its_log(tmp_path):
    lab_smoke("graph-capture", tmp_path, "--logdir", str(tmp_path))
    (run,) = json.loads((tmp_path / "graph-capture-cpu.json").read_text())["runs"]
    assert run["returncode"] == 0 and run["generated"] == "GENERATED 16 tokens" and run["crash"] is None


@pytest.mark.deploys
def test_the_two_node_run_spans_two_cpu_nodes_and_survives_losing_one(tmp_path):
    from tutorial import teardown

    lab_smoke("multinode", tmp_path, "--logdir", str(tmp_path / "logs"), timeout=1800)
    result = json.loads((tmp_path / "multinode-cpu.json").read_text())
    assert result["nodes"] == 2 and result["answer_ok"] and result["vllm_kv_tokens"] > 0
    assert result["bench"]["failed"] == {"pp2-two-nodes": 0, "tp2-one-node": 0}
    assert {r["config"] for r in result["bench"]["runs"]} == {"pp2-two-nodes", "tp2-one-node"}
    assert {r["node_id"] for r in result["placement"]["replicas"]} <= set(result["placement"]["nodes"])
    loss = result["node_loss"]  # the replica may sit on either node: what clients saw is recorded, not judged
    assert loss["killed_processes"] > 0 and loss["requests_before"] > 0 and loss["app_status_at_end"]
    assert (tmp_path / "multinode-cpu.png").exists() and teardown.leftovers() == []


def test_the_readers_gpu_setup_stops_on_a_machine_without_a_gpu(tmp_path):
    # No nvidia-smi on PATH (this CPU machine has none): a clear word, before any install.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "head", "cat", "sha256sum", "cut"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    out = subprocess.run(["bash", "scripts/gpu_setup.sh"], cwd=ROOT, env={"PATH": str(bin_dir)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "finds no GPU" in out.stderr, out.stdout + out.stderr


def test_a_missing_hugging_face_token_is_named_before_any_download(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    out = subprocess.run([sys.executable, "-m", "tutorial.hf_access"], cwd=ROOT, capture_output=True, text=True,
                         env={**env, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert out.returncode == 1 and "no Hugging Face token" in out.stdout, out.stdout + out.stderr
    from tutorial.hf_access import model_source

    assert model_source() == "meta-llama/Llama-3.1-70B-Instruct"
