"""What experiments read of a running deployment beyond what the notebook shows: every listening
socket, and an engine metric split by replica."""

import contextlib

import psutil

from tutorial import metrics


def listening() -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of this machine."""
    found = []
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN:
            with contextlib.suppress(psutil.NoSuchProcess):
                found.append((c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name() if c.pid else "another user"))
    return sorted(found)


def per_replica(name: str, urls: list[str] | None = None) -> dict[str, float]:
    """One ray_vllm_ sample summed by engine replica: {replica id: value}."""
    totals: dict[str, float] = {}
    for sample in metrics.samples(urls):
        if sample.name == name:
            replica = sample.labels.get("ReplicaId", "")
            totals[replica] = totals.get(replica, 0.0) + sample.value
    return totals
