"""A one-line deployment beside the tutorial's: scaling it from one replica to two changes Serve's
routing table, and HAProxy reloads as it does when the LLM scales, without a second engine on the CPU.

  serve run lab.reload_probe:one --name reload-probe --route-prefix /reload-probe --non-blocking
  serve run lab.reload_probe:two --name reload-probe --route-prefix /reload-probe --non-blocking
"""

from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0})  # beside the engine on two cores
class Probe:
    def __call__(self, request) -> str:
        return "ok"


one = Probe.options(num_replicas=1).bind()
two = Probe.options(num_replicas=2).bind()
