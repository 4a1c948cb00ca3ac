"""A one-line deployment beside the tutorial's: scaling it between one replica and two changes Serve's
routing table, and HAProxy reloads as it does when the LLM scales, without a second engine on the CPU.

  serve run lab.reload_probe:two --name reload-probe --route-prefix /reload-probe --non-blocking

Run as a module, it scales the probe to each app named on its input ("one" or "two"), printing
"scaled" when Serve has applied it. It connects and imports before the first line comes, so a scale
that a busy 2-core machine would start seconds later as a `serve run` command starts at once.
"""

import sys

import ray
from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0})  # beside the engine on two cores
class Probe:
    def __call__(self, request) -> str:
        return "ok"


one = Probe.options(num_replicas=1).bind()
two = Probe.options(num_replicas=2).bind()

if __name__ == "__main__":
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    print("connected", flush=True)
    for line in sys.stdin:
        serve.run({"one": one, "two": two}[line.strip()], name="reload-probe", route_prefix="/reload-probe",
                  blocking=False)
        print("scaled", flush=True)
