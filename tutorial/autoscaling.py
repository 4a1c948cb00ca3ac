"""The engine deployment's scaling settings and replicas, as the running Serve application has them.

Serve fills in what a config leaves out (Ray Serve LLM sets a target of a billion requests per
replica, which never scales), so the file is not proof: this reads the config Serve applied
from Ray's dashboard API, the same source `serve status` uses. Run: python -m tutorial.autoscaling
"""

import sys

from tutorial.facts import DASHBOARD_PORT

DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"
APP = "default"  # the name `serve run` gives an application that names none
ENGINE_PREFIX = "LLMServer"  # Ray Serve LLM names the engine deployment LLMServer:<model id>
SHOWN = ("min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s",
         "look_back_period_s")


def deployments(app: str = APP, address: str = DASHBOARD) -> dict:
    """The application's deployments by name, with their details: deployment_config, replicas, ..."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    details = ServeSubmissionClient(address).get_serve_details()
    return details.get("applications", {}).get(app, {}).get("deployments", {})


def engine_deployment(app: str = APP, address: str = DASHBOARD) -> dict:
    """The engine deployment's details: deployment_config, replicas, target_num_replicas, ..."""
    found = deployments(app, address)
    for name, d in found.items():
        if name.startswith(ENGINE_PREFIX):
            return d
    raise RuntimeError(f"no {ENGINE_PREFIX} deployment in Serve application {app!r} (found {sorted(found)})")


def applied(deployment: dict) -> dict:
    """The scaling settings Serve applied, flattened: max_ongoing_requests and SHOWN."""
    config = deployment["deployment_config"]
    auto = config.get("autoscaling_config") or {}
    return {"max_ongoing_requests": config.get("max_ongoing_requests"), **{k: auto.get(k) for k in SHOWN}}


def running_replicas(deployment: dict) -> int:
    return sum(r["state"] == "RUNNING" for r in deployment.get("replicas", []))


def main() -> int:
    d = engine_deployment()
    print(f"{d['name']}: {running_replicas(d)} replica(s) running, Serve's target {d['target_num_replicas']}")
    for key, value in applied(d).items():
        print(f"  {key:<24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
