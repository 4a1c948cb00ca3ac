"""vLLM's engine metrics as Ray exports them, read from Ray's Prometheus endpoint.

With `log_engine_metrics` on, each engine replica records vLLM's metrics through Ray, and the
Ray node it runs on serves them in Prometheus' text format on its metrics export port (8080 on
the head here, fixed by `ray start --metrics-export-port 8080`). The head lists every node's
endpoint in a file for Prometheus' file-based service discovery; this reader sums over all of
them, so it finds a replica on a worker node too. Ray renames `vllm:x` to `ray_vllm_x` and pushes
new values every few seconds, so a reader polls until they arrive.

  python -m tutorial.metrics   print the engine metrics once they count the notebook's requests
"""

import json
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tutorial.facts import METRICS_PORT

METRICS_URL = f"http://127.0.0.1:{METRICS_PORT}/metrics"
# Ray's names for the vLLM metrics this tutorial watches (histograms as _sum and _count).
TTFT = "ray_vllm_time_to_first_token_seconds"
TPOT = "ray_vllm_request_time_per_output_token_seconds"
PROMPT_TOKENS = "ray_vllm_prompt_tokens_total"
GENERATION_TOKENS = "ray_vllm_generation_tokens_total"
KV_CACHE_USAGE = "ray_vllm_kv_cache_usage_perc"
# The notebook's requests before its metrics cell: the readiness check's, curl's and the client's.
NOTEBOOK_REQUESTS = 3
REQUIRED = (f"{TTFT}_count", f"{TTFT}_sum", f"{TPOT}_count", f"{TPOT}_sum", PROMPT_TOKENS,
            GENERATION_TOKENS, KV_CACHE_USAGE)


# Written by the head every few seconds: [{"labels": {"job": "ray"}, "targets": ["ip:port", ...]}].
DISCOVERY_FILE = Path("/tmp/ray/prom_metrics_service_discovery.json")


def endpoints() -> list[str]:
    """Every node's metrics endpoint, as the head lists them for Prometheus; this node's while
    the list is not written yet."""
    try:
        targets = [t for group in json.loads(DISCOVERY_FILE.read_text()) for t in group["targets"]]
    except (OSError, ValueError, KeyError, TypeError):
        targets = []
    return [f"http://{t}/metrics" for t in targets] or [METRICS_URL]


def samples(urls: list[str] | None = None):
    """Every sample on the endpoints (default: all of the cluster's). Raises OSError only when no
    endpoint answers."""
    urls = urls or endpoints()
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                text = resp.read().decode()
        except OSError as e:  # the dashboard's or autoscaler's exporter may not be up
            errors.append(f"{url}: {e}")
            continue
        for family in text_string_to_metric_families(text):
            yield from family.samples
    if len(errors) == len(urls):
        raise OSError("; ".join(errors))


def scrape(urls: list[str] | None = None) -> dict[str, float]:
    """Every ray_vllm_ sample on the endpoints, summed over its labels (replicas, models) and endpoints."""
    totals: dict[str, float] = {}
    for sample in samples(urls):
        if sample.name.startswith("ray_vllm_"):
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def wait_for_engine_metrics(min_requests: int = 1, timeout_s: float = 90, urls: list[str] | None = None) -> dict:
    """Poll until every REQUIRED metric is exported and TTFT counts `min_requests`; else raise."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            seen, error = scrape(urls), None
        except OSError as e:
            seen, error = {}, e
        missing = [name for name in REQUIRED if name not in seen]
        if not missing and seen[f"{TTFT}_count"] >= min_requests and seen[GENERATION_TOKENS] > 0:
            return seen
        if time.monotonic() > deadline:
            names = sorted(n for n in seen if not n.endswith("_bucket"))
            where = ", ".join(urls or endpoints())
            raise RuntimeError(
                f"{where}: no engine metrics for {min_requests} request(s) after {timeout_s:.0f} s "
                f"(error: {error}; missing: {missing}; TTFT count: {seen.get(f'{TTFT}_count')}). "
                f"Is log_engine_metrics on? Exported: {names}")
        time.sleep(2)


def summary(m: dict) -> str:
    ttft_n, tpot_n = m[f"{TTFT}_count"], m[f"{TPOT}_count"]
    return "\n".join([
        f"requests measured        {ttft_n:.0f}",
        f"mean time to first token {m[f'{TTFT}_sum'] / ttft_n * 1000:.0f} ms",
        f"mean time per out token  {m[f'{TPOT}_sum'] / max(tpot_n, 1) * 1000:.0f} ms",
        f"prompt tokens            {m[PROMPT_TOKENS]:.0f}",
        f"generated tokens         {m[GENERATION_TOKENS]:.0f}",
        f"KV cache in use now      {m[KV_CACHE_USAGE]:.1%}",
    ])


if __name__ == "__main__":
    try:
        # Ray pushes each replica's values every few seconds: wait until all of them are counted.
        print(summary(wait_for_engine_metrics(min_requests=NOTEBOOK_REQUESTS)))
    except RuntimeError as e:
        sys.exit(f"metrics: {e}")
