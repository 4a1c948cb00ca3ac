"""Regenerate k8s/rayservice.yaml, the KubeRay RayService for the 70B, from serve_config.yaml.

serveConfigV2 is serve_config.yaml's application, verbatim, so the cluster runs what the Serve
config file says; the GPUs per worker pod follow its tensor_parallel_size x pipeline_parallel_size,
the worker pods' limit its max_replicas, and the node selector its accelerator_type.
--check only reports a difference.
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import capacity  # noqa: E402  (the repository's modules, run as a script)
from serve_plugins.cluster_env import SHARED  # noqa: E402

SERVE_CONFIG = ROOT / "serve_config.yaml"
MANIFEST = ROOT / "k8s" / "rayservice.yaml"
# The Ray of the GPU stack this tutorial pins, read from where it is pinned.
RAY_VERSION = re.search(r"^ray\[[\w,]+\]==(\S+)", (ROOT / "requirements-gpu.txt").read_text(), re.M).group(1)
IMAGE = f"rayproject/ray-llm:{RAY_VERSION}-py312-cu130"  # Ray's LLM image: Ray, vLLM 0.26 (CUDA 13)
HEADER = """\
# Generated from serve_config.yaml by scripts/render_k8s.py; do not edit by hand.
# The 70B behind KubeRay: kubectl apply -f k8s/rayservice.yaml (see the notebook's
# "On Kubernetes with KubeRay"). Needs the Secrets hf-token (key token) and serve-api-key (key key),
# the ConfigMap serve-plugins (every file of serve_plugins/), and nodes with 8 GPUs.
"""
# Where each pod finds serve_plugins, from the ConfigMap: on PYTHONPATH.
PLUGINS_DIR = "/opt/serve-plugins"
# What the ConfigMap holds: `kubectl create configmap serve-plugins --from-file=serve_plugins/` takes
# every file of the folder, under its own name.
PLUGIN_FILES = sorted(p.name for p in (ROOT / "serve_plugins").glob("*.py"))


def manifest() -> dict:
    serve = yaml.safe_load(SERVE_CONFIG.read_text())
    (llm,) = serve["applications"][0]["args"]["llm_configs"]
    engine = llm["engine_kwargs"]
    gpus = engine.get("tensor_parallel_size", 1) * engine.get("pipeline_parallel_size", 1)
    replicas = llm["deployment_config"]["autoscaling_config"]
    def container(name: str) -> dict:
        return {
            "name": name, "image": IMAGE,
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}},
                    {"name": "SERVE_API_KEY", "valueFrom": {"secretKeyRef": {"name": "serve-api-key", "key": "key"}}},
                    *({"name": k, "value": v} for k, v in SHARED.items()),
                    {"name": "RAY_SERVE_HAPROXY_BINARY_PATH", "value": f"{PLUGINS_DIR}/serve_plugins/haproxy_guard.py"},
                    {"name": "PYTHONPATH", "value": PLUGINS_DIR}],
            "volumeMounts": [{"name": "serve-plugins", "mountPath": PLUGINS_DIR, "readOnly": True}],
        }

    # Mode 0555 (365): Ray runs haproxy_guard.py itself as HAProxy's program.
    plugins = {"name": "serve-plugins", "configMap": {"name": "serve-plugins", "defaultMode": 0o555, "items": [
        {"key": f, "path": f"serve_plugins/{f}"} for f in PLUGIN_FILES]}}
    head = {
        "serviceType": "ClusterIP",
        "rayStartParams": {"num-gpus": "0"},
        "template": {"spec": {"volumes": [plugins], "containers": [{
            **container("ray-head"),
            "resources": {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"cpu": "8", "memory": "32Gi"}},
            "ports": [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                      {"containerPort": 8000, "name": "serve"}, {"containerPort": 8080, "name": "metrics"}],
        }]}},
    }
    worker = {
        "groupName": "gpu-workers",
        "replicas": replicas["min_replicas"], "minReplicas": replicas["min_replicas"],
        "maxReplicas": replicas["max_replicas"],
        "rayStartParams": {},
        "template": {"spec": {
            "nodeSelector": {"nvidia.com/gpu.product": capacity.GPU_PRODUCTS[llm["accelerator_type"]]},
            "containers": [{
                **container("ray-worker"),
                "resources": {"requests": {"cpu": "32", "memory": "320Gi", "nvidia.com/gpu": str(gpus)},
                              "limits": {"cpu": "32", "memory": "320Gi", "nvidia.com/gpu": str(gpus)}},
                "volumeMounts": [*container("ray-worker")["volumeMounts"], {"name": "dshm", "mountPath": "/dev/shm"}],
            }],
            "volumes": [plugins, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}],
        }},
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "llama-3-1-70b"},
        "spec": {
            "serveConfigV2": yaml.safe_dump({"applications": serve["applications"]}, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "authOptions": {"mode": "token"},
                "enableInTreeAutoscaling": True,
                "headGroupSpec": head,
                "workerGroupSpecs": [worker],
            },
        },
    }


class Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as literal blocks, as people write them by hand."""


Dumper.ignore_aliases = lambda self, data: True  # a dict used twice is written out twice, not as &id001
Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


# The reason for each choice above, written into the YAML above the first line that starts with
# the key (YAML dumpers drop comments).
REASONS = {
    "  serveConfigV2:": "serve_config.yaml's application, verbatim: one source for the Serve config.",
    "    rayVersion:": "The Ray of the pinned GPU stack (requirements-gpu.txt), as in the image below.",
    "    authOptions:": "Ray's token auth (KubeRay 1.5.1+): KubeRay makes the token a Secret and hands it to every pod.",
    "      serviceType:": "The head's Service (dashboard, GCS) stays inside the cluster; the token guards it there too.",
    "    enableInTreeAutoscaling:": "Ray's autoscaler adds a worker pod when Serve adds a replica with nowhere to run.",
    "        num-gpus:": "The head runs Ray's control processes and Serve's proxy, never an engine.",
    "            env:": "HF_TOKEN and SERVE_API_KEY from Secrets; then cluster_env.SHARED, as the notebook sets it, and "
                       "HAProxy through the guard (its files in Ray's default folder: a pod has no other local account).",
    "      minReplicas:": "One pod per replica: min_replicas and max_replicas of the deployment.",
    "          nodeSelector:": "Only nodes with the GPU the config's accelerator_type names.",
    "                nvidia.com/gpu:": "tensor_parallel_size x pipeline_parallel_size GPUs: one replica per pod.",
    "              mountPath: /dev/shm": "NCCL moves tensors through /dev/shm; a container's default 64 MiB is too small.",
    "          - name: serve-plugins": "serve_plugins/, every file, from the ConfigMap: the package on PYTHONPATH.",
}


def render() -> str:
    out, done = [], set()
    for line in yaml.dump(manifest(), Dumper=Dumper, sort_keys=False, width=120).splitlines():
        key = next((k for k in REASONS if line.startswith(k) and k not in done), None)
        if key:
            done.add(key)
            out.append(" " * (len(line) - len(line.lstrip())) + "# " + REASONS[key])
        out.append(line)
    return HEADER + "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not MANIFEST.exists() or MANIFEST.read_text() != text:
            print("k8s/rayservice.yaml is out of date: run .venv/bin/python scripts/render_k8s.py")
            return 1
        print("k8s/rayservice.yaml matches serve_config.yaml")
        return 0
    MANIFEST.parent.mkdir(exist_ok=True)
    MANIFEST.write_text(text)
    print(f"wrote {MANIFEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
