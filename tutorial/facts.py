"""The values the notebook's cells write as literals, in one place for the helpers and tests.

A reader's cell says `my-llama-3.1-70b`, `127.0.0.1:8000` or `--metrics-export-port 8080`
outright; tests/test_static.py checks that the cells and serve_llama_3_1_70b.py use these very
values, so a change here that the cells miss fails the tests.
"""

MODEL_ID = "my-llama-3.1-70b"  # the served name: what clients put in "model"
HTTP_PORT = 8000  # the OpenAI-compatible endpoint (HAProxy in the high-throughput mode)
HTTP_HOST = "127.0.0.1"  # serve start --http-host: the endpoint and the replicas listen on loopback
RAY_PORT = 6379  # the head node's GCS, where other nodes join
METRICS_PORT = 8080  # ray start --metrics-export-port: Prometheus' endpoint on the head
# HAProxy's statistics page and Prometheus metrics, at Ray's defaults (RAY_SERVE_HAPROXY_STATS_PORT,
# RAY_SERVE_HAPROXY_METRICS_PORT); serve_plugins/haproxy_guard.py keeps them on loopback.
HAPROXY_SIDE_DOORS = (8404, 9101)
DASHBOARD_PORT = 8265  # Ray's dashboard, which the serve CLI talks to
READY_TIMEOUT_S = 1800  # the deadline for the deployment to answer, unless READY_TIMEOUT_S is set
MIN_CPUS = 4  # logical CPUs the head declares at least: the ingress, the engine and Serve's actors
