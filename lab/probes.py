"""What experiments read of a running deployment beyond what the notebook shows: an engine metric
split by replica."""

from tutorial import metrics


def per_replica(name: str, urls: list[str] | None = None) -> dict[str, float]:
    """One ray_vllm_ sample summed by engine replica: {replica id: value}."""
    totals: dict[str, float] = {}
    for sample in metrics.samples(urls):
        if sample.name == name:
            replica = sample.labels.get("ReplicaId", "")
            totals[replica] = totals.get(replica, 0.0) + sample.value
    return totals
