"""The GPU runner's pieces, checked without a GPU: the workflow, the wheelhouse, the results."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))
import notebook_results  # noqa: E402
import wheelhouse  # noqa: E402

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
    assert big["env"]["LLM_PROFILE"] == "" and "gpu-8x" in big["runs-on"]


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


def test_h100_results_file():
    result = json.loads((ROOT / "ci/results/gpu-notebook-h100.json").read_text())
    assert set(notebook_results.FIELDS) <= set(result)
    assert result["passed"] is True and result["cells_failed"] == 0 and result["shutdown_verified"] is True
    assert "H100" in result["gpu_name"] and result["gpu_count"] >= 1
    assert (result["ray_version"], result["vllm_version"]) == ("2.58.1", "0.26.0")
    assert "4" in result["answer"]
    assert 0 < result["first_token_s"] < result["time_to_ready_s"]


def test_tp2_results_file():
    """The two-GPU rehearsal: the notebook passed, and the file holds the planner cases and the benchmark."""
    result = json.loads((ROOT / "ci/results/tp2-h200x2.json").read_text())
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
    assert all(r["failed"] == 0 and r["completed"] == r["prompts"] for r in result["bench"]["runs"])


@pytest.mark.parametrize("name", ["gpu-notebook-h100", "tp2-h100x2", "tp2-h200x2"])
def test_gpu_results_say_which_notebook_they_cover(name):
    import nbformat

    result = json.loads((ROOT / f"ci/results/{name}.json").read_text())
    executed = nbformat.read(ROOT / f"ci/results/{name}.ipynb", as_version=4)
    assert result["notebook_sha256"] == notebook_results.notebook_sha256(executed)


def test_results_are_recomputed_from_the_executed_notebook():
    import nbformat

    nb = nbformat.read(ROOT / "ci/results/gpu-notebook-h100.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    result = json.loads((ROOT / "ci/results/gpu-notebook-h100.json").read_text())
    assert notebook_results.time_to_ready(code) == result["time_to_ready_s"]
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)


def test_gpu_scripts_are_valid_bash():
    for script in ["gpu_setup.sh", "gpu_notebook.sh", "gpu_cleanup.sh", "setup_venv.sh", "tutorial.sh", "test.sh"]:
        subprocess.run(["bash", "-n", str(ROOT / "ci" / script)], check=True)
