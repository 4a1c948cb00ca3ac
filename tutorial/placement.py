"""Where the engine runs: the node of each engine replica and of each of its GPU workers, read
from Ray's state API (so it sees every node of the cluster, not only this one).

  python -m tutorial.placement         one line per replica and worker, then the nodes they span
  python -m tutorial.placement --json  the same as JSON

With tensor or pipeline parallelism vLLM's Ray executor runs one worker actor per GPU
(`RayWorkerProc`, or `RayWorkerWrapper` in its older executor), placed in the replica's placement
group; with one device the engine runs in the replica.
Ray must be told RAY_AUTH_MODE=token before it is imported, as every cell of the notebook is.
"""

import json
import sys

REPLICA_CLASS = "LLMServer"  # Ray Serve LLM's engine replica: ServeReplica:default:LLMServer:...
WORKER_CLASSES = ("RayWorkerProc", "RayWorkerWrapper")  # vLLM's GPU worker, one per tensor and pipeline rank


def engine_placement() -> dict:
    """{"nodes": {node_id: "ip (head)"}, "replicas": [...], "workers": [...], "worker_nodes": n};
    replicas and workers are {"node_id", "pid"}, sorted by node."""
    # Imported here: Ray reads RAY_AUTH_MODE when it is imported, so importing this module must not.
    from ray.util.state import list_actors, list_nodes

    nodes = {n.node_id: n.node_ip + (" (head)" if n.is_head_node else "")
             for n in list_nodes(filters=[("state", "=", "ALIVE")])}
    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)

    def where(*marks: str) -> list[dict]:
        return sorted(({"node_id": a.node_id, "pid": a.pid, "class": a.class_name} for a in actors
                       if any(m in a.class_name for m in marks)), key=lambda a: (a["node_id"], a["pid"]))

    workers = where(*WORKER_CLASSES)
    return {"nodes": nodes, "replicas": where(REPLICA_CLASS), "workers": workers,
            "worker_nodes": len({w["node_id"] for w in workers})}


def main(argv: list[str]) -> int:
    found = engine_placement()
    if "--json" in argv:
        print(json.dumps(found, indent=2))
        return 0
    for kind in ("replicas", "workers"):
        for a in found[kind]:
            print(f"{kind[:-1]:8} pid {a['pid']:>7} on node {a['node_id'][:8]} {found['nodes'].get(a['node_id'], '?')}")
    if not found["replicas"]:
        print("no engine replica is running")
        return 1
    print(f"engine workers on {found['worker_nodes']} of the cluster's {len(found['nodes'])} node(s)" if found["workers"]
          else "no engine worker actors: the engine runs inside its replica (one device, no Ray executor)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
