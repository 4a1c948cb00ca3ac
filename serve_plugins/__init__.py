"""What Ray loads from this repository by name, shipped whole to every cluster that serves the tutorial.

  cluster_env        the environment of `ray start`, the same on every target, naming the entries below
  proxy:middlewares  every Serve HTTP server's callback: the API key check (api_key), a clear 400
                     for vLLM's silent 500s (structured_errors), and a 503 with Serve's reason for a
                     request that waits on a replica that cannot start (no_replica)
  haproxy_guard.py   the program Ray starts as HAProxy; haproxy_files gives it a private folder
  startup            the small-model profiles' LLMConfig callback (weights already on local disk)

It imports nothing else of the repository, so a node needs only this folder's parent on PYTHONPATH:
tests/test_serve_plugins.py imports every entry point from a folder that holds nothing but what the
KubeRay ConfigMap ships.
"""
