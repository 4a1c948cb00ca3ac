# serve_llama_3_1_70b.py: Llama 3.1 70B Instruct behind an OpenAI-compatible endpoint.
# Written by notebook.ipynb (its "Configure the deployment" cell): edit it there.
import os

from ray.serve.llm import LLMConfig, build_openai_app

config = dict(
    model_loading_config=dict(
        # The name clients put in "model"; model_source is where the weights come from.
        model_id="my-llama-3.1-70b",
        # Gated: accept Meta's licence on Hugging Face first, or use the ungated
        # copy of the same weights, "unsloth/Meta-Llama-3.1-70B-Instruct".
        model_source="meta-llama/Llama-3.1-70B-Instruct",
    ),
    # Ray places the engine only on nodes with this GPU type: it must match your node.
    accelerator_type="A100-40G",
    deployment_config=dict(
        # Requests Serve sends one replica at once. On 8 x A100-40G the planner gives its KV cache
        # room for 15 requests of the full 32768 tokens and 62 of 8192 (python capacity.py, not
        # measured on A100s); most requests are far shorter.
        max_ongoing_requests=48,
        autoscaling_config=dict(
            min_replicas=1,
            max_replicas=4,
            # Add a replica at half of that: a new one needs minutes to load its weights.
            target_ongoing_requests=24,
            # Scale out soon after the load rises, and in only after 10 quiet minutes, so a
            # replica that took minutes to start is not dropped in a short lull.
            upscale_delay_s=15,
            downscale_delay_s=600,
        ),
    ),
    # Export vLLM's engine metrics (time to first token, KV cache use, token counts) through
    # Ray's Prometheus endpoint, for the Serve LLM Grafana dashboard.
    log_engine_metrics=True,
    # No HF_TOKEN here: the engine finds it in the environment that `ray start` ran in. Passed
    # in runtime_env, Ray would write it in clear into its logs and onto a worker's command line.
    engine_kwargs=dict(
        max_model_len=32768,
        # Shard every weight matrix across the node's 8 GPUs (about 17.5 GB of bf16 each).
        tensor_parallel_size=8,
    ),
)

# LLM_PROFILE runs this same file on the machine at hand: a 135M model on a CPU or a GPU, or
# the 70B's shape with random weights on this node's GPUs (tutorial/profiles.py, in the
# tutorial's repository). Unset or "70b", the config above is deployed as it is, and this file
# needs nothing but Ray.
llm_args = config
if os.environ.get("LLM_PROFILE", "70b") not in ("", "70b"):
    from tutorial.profiles import apply_profile

    llm_args = apply_profile(config, os.environ["LLM_PROFILE"])
llm_config = LLMConfig(**llm_args)

app = build_openai_app({"llm_configs": [llm_config]})
