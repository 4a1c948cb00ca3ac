"""The tutorial's deployment with the benchmark's model and engine arguments swapped in.

lab/bench.py deploys this with `serve run lab.bench_app:app` from the repository root. Everything but the model
and the engine arguments comes from serve_llama_3_1_70b.py through LLM_PROFILE, so the
benchmark measures the deployment the tutorial teaches, with the engine plain `vllm serve` gets.
  BENCH_MODEL_DIR      the model directory (lab/model_dirs.py)
  BENCH_ENGINE_KWARGS  the engine arguments, as JSON
  BENCH_MAX_ONGOING_REQUESTS  requests a replica takes at once: twice the most clients of the sweep
  BENCH_STREAM_BATCHING_INTERVAL_MS  if set, the stream batching interval of Ray's default mode
"""

import json
import os

from ray.serve.llm import LLMConfig, build_openai_app

from serve_llama_3_1_70b import config
from tutorial.profiles import apply_profile

args = apply_profile(config, os.environ["LLM_PROFILE"])
args["model_loading_config"]["model_source"] = os.environ["BENCH_MODEL_DIR"]
args["engine_kwargs"] = json.loads(os.environ["BENCH_ENGINE_KWARGS"])
args["deployment_config"]["max_ongoing_requests"] = int(os.environ["BENCH_MAX_ONGOING_REQUESTS"])
if "BENCH_STREAM_BATCHING_INTERVAL_MS" in os.environ:
    args["experimental_configs"] = dict(stream_batching_interval_ms=float(os.environ["BENCH_STREAM_BATCHING_INTERVAL_MS"]))

app = build_openai_app({"llm_configs": [LLMConfig(**args)]})
