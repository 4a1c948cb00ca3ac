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
