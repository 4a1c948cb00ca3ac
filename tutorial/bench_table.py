"""The benchmark's figures as a Markdown table, as the notebook shows them."""


def table(result: dict) -> str:
    """Markdown: each Ray config's output throughput as a share of vLLM's, and the median TTFTs."""
    by = {(r["model"], r["config"], r["concurrency"]): r for r in result["runs"]}
    configs = [c for c in dict.fromkeys(r["config"] for r in result["runs"]) if c != "vllm"]
    head = ["model", "concurrency", "vLLM tok/s"] + [f"{c} / vLLM" for c in configs]
    head += ["TTFT ms: vLLM"] + [c for c in configs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, config, c), base in by.items():
        if config != "vllm":
            continue
        ratios = [f"{by[model, k, c]['output_throughput'] / base['output_throughput']:.2f}"
                  if (model, k, c) in by else "not run" for k in configs]
        ttfts = [f"{by[model, k, c]['median_ttft_ms']:.1f}" if (model, k, c) in by else "not run" for k in configs]
        row = [model, str(c), f"{base['output_throughput']:.0f}", *ratios, f"{base['median_ttft_ms']:.1f}", *ttfts]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


SHAPES = {"8b": "Llama 3.1 8B", "70b": "Llama 3.1 70B", "135m": "SmolLM2-135M"}


def label(result: dict) -> str:
    """What the table measured: device, versions, date, the model shape, its parallelism and Serve's
    request cap, and the load."""
    ray = next(s for s in result["servers"] if s["server"] == "ray-serve")
    engine, load = ray["engine_kwargs"], result["load"]
    weights = "random weights" if engine.get("load_format") == "dummy" else "real weights"
    return (f"{result['device']}, Ray {result['ray_version']}, vLLM {result['vllm_version']}, {result['date']}: "
            f"the {SHAPES.get(ray['model'], ray['model'])} shape with {weights}, tensor parallel "
            f"{engine.get('tensor_parallel_size', 1)}, max_model_len {engine['max_model_len']}, Serve's "
            f"max_ongoing_requests {ray['max_ongoing_requests']}; {load['input_len']} input and {load['output_len']} "
            f"output tokens per request, {', '.join(map(str, load['concurrency']))} at once")
