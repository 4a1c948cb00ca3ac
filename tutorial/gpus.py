"""The node's NVIDIA GPUs, named the way Ray's accelerator_type names them."""

import re
import shutil
import subprocess


def detect() -> list[tuple[str, int]]:
    """(name, memory MiB) for each GPU nvidia-smi reports; empty without a driver."""
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=60,
    )
    rows = [line.rsplit(",", 1) for line in out.stdout.strip().splitlines() if "," in line]
    return [(name.strip(), int(mib)) for name, mib in rows]


def node_type() -> str | None:
    """The accelerator_type to ask Ray for on this node (e.g. "H100", never "A100-40G"); None without a GPU."""
    found = detect()
    return min(ray_gpu_type(*found[0]), key=len) if found else None


def ray_gpu_type(name: str, memory_mib: int) -> set[str]:
    """The accelerator_type values Ray matches this GPU against (e.g. {"A100", "A100-40G"})."""
    m = re.search(r"\b([A-Z]+[0-9]+[A-Z]?)\b", name.replace("NVIDIA", ""))
    base = m.group(1) if m else name
    types = {base}
    if base == "A100":  # Ray labels A100s by memory size too
        types.add("A100-80G" if memory_mib > 50 * 1024 else "A100-40G")
    return types
