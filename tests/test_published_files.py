"""The files published for other ecosystems, each checked offline by the tool its users rely on:
the KubeRay RayService (Ray's Serve schema, LLMConfig, the Kubernetes client's models, KubeRay's
v1 API), service.yaml (the anyscale package's ServiceConfig) and the GitHub Actions workflow
(actionlint and zizmor). None of them can run here: no cluster, account or runner."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes.client as k8s
import pytest
import yaml

from serve_plugins import cluster_env

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
SERVE_CONFIG = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
KUBERAY = json.loads((ROOT / "tests" / "fixtures" / "data" / "kuberay-api-v1.json").read_text())
CLUSTER = MANIFEST["spec"]["rayClusterConfig"]
PODS = {"head": CLUSTER["headGroupSpec"]["template"],
        **{g["groupName"]: g["template"] for g in CLUSTER["workerGroupSpecs"]}}


def strict(data, type_name: str, path: str) -> list[str]:
    """Fields of `data` that the Kubernetes client's model `type_name` does not have, recursively
    (the client itself drops unknown fields silently, as kubectl apply would reject them)."""
    if type_name.startswith(("List[", "list[")):  # List[V1Container]
        return [p for i, x in enumerate(data) for p in strict(x, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith(("Dict[", "dict(")):  # Dict[str, str]
        inner = type_name[5:-1].split(", ", 1)[1]
        return [p for k, v in data.items() for p in strict(v, inner, f"{path}.{k}")]
    model = getattr(k8s.models, type_name, None)
    if model is None:  # str, int, bool, object
        return []
    by_json = {v: k for k, v in model.attribute_map.items()}
    problems = [f"{path}.{key}: no such field in {type_name}" for key in data if key not in by_json]
    return problems + [p for key, value in data.items() if key in by_json
                       for p in strict(value, model.openapi_types[by_json[key]], f"{path}.{key}")]


def test_manifest_matches_a_fresh_render():
    out = subprocess.run([sys.executable, "scripts/render_k8s.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_serve_config_v2_is_the_serve_config_file():
    assert yaml.safe_load(MANIFEST["spec"]["serveConfigV2"]) == {"applications": SERVE_CONFIG["applications"]}


def test_serve_config_v2_parses_with_rays_own_schemas():
    from ray.serve.llm import LLMConfig
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema(**yaml.safe_load(MANIFEST["spec"]["serveConfigV2"]))
    (app,) = schema.applications
    assert app.import_path == "ray.serve.llm:build_openai_app"
    (llm,) = app.args["llm_configs"]
    assert LLMConfig(**llm).engine_kwargs["tensor_parallel_size"] == 8


@pytest.mark.parametrize("group", sorted(PODS))
def test_pod_templates_are_kubernetes_pod_templates(group):
    assert strict(PODS[group], "V1PodTemplateSpec", group) == []
    # The client's own deserialisation also checks required fields and types.
    pod = k8s.ApiClient()._ApiClient__deserialize(PODS[group], "V1PodTemplateSpec")
    assert pod.spec.containers[0].image.startswith("rayproject/ray-llm:2.58.1-")  # the pinned GPU Ray


def test_strict_check_names_an_unknown_field():
    bad = {"spec": {"containers": [{"name": "x", "image": "y", "resourcez": {}}]}}
    assert strict(bad, "V1PodTemplateSpec", "pod") == ["pod.spec.containers[0].resourcez: no such field in V1Container"]


def test_rayservice_uses_only_kuberays_v1_fields():
    def check(obj: dict, spec: str, path: str) -> list[str]:
        api = KUBERAY[spec]
        return ([f"{path}.{k}: not in KubeRay's {spec}" for k in obj if k not in api["fields"]]
                + [f"{path}.{k}: required by KubeRay's {spec}" for k in api["required"] if k not in obj])

    problems = check(MANIFEST["spec"], "RayServiceSpec", "spec") + check(CLUSTER, "RayClusterSpec", "rayClusterConfig")
    problems += check(CLUSTER["authOptions"], "AuthOptions", "authOptions")
    problems += check(CLUSTER["headGroupSpec"], "HeadGroupSpec", "headGroupSpec")
    for g in CLUSTER["workerGroupSpecs"]:
        problems += check(g, "WorkerGroupSpec", g["groupName"])
    assert problems == [] and MANIFEST["apiVersion"] == "ray.io/v1" and MANIFEST["kind"] == "RayService"


def test_gpus_and_replicas_follow_the_config():
    (llm,) = SERVE_CONFIG["applications"][0]["args"]["llm_configs"]
    engine, scaling = llm["engine_kwargs"], llm["deployment_config"]["autoscaling_config"]
    (worker,) = CLUSTER["workerGroupSpecs"]
    container = worker["template"]["spec"]["containers"][0]
    gpus = engine["tensor_parallel_size"] * engine.get("pipeline_parallel_size", 1)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus), "GPUs per worker pod"
    assert (worker["minReplicas"], worker["maxReplicas"]) == (scaling["min_replicas"], scaling["max_replicas"])
    assert "A100-SXM4-40GB" in worker["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"]
    assert CLUSTER["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"  # no engine on the head
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]  # NCCL's shared memory


def test_secrets_come_from_secrets():
    for group, pod in PODS.items():
        for c in pod["spec"]["containers"]:
            env = {e["name"]: e for e in c["env"]}
            for name, secret in (("HF_TOKEN", "hf-token"), ("SERVE_API_KEY", "serve-api-key")):
                assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == secret, group
    assert "hf_" not in (ROOT / "k8s" / "rayservice.yaml").read_text()


def test_the_cluster_is_closed_by_default():
    # Ray's token auth through KubeRay's own setting, and the head's Service (dashboard, GCS) inside the cluster.
    assert CLUSTER["authOptions"]["mode"] == "token" and "token" in KUBERAY["AuthOptions"]["mode_values"]
    head = CLUSTER["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    assert "dashboard-host" not in head["rayStartParams"]


def test_every_pod_runs_in_the_notebooks_cluster_environment():
    # The same variables as the notebook's `ray start` (serve_plugins/cluster_env.py's SHARED), serve_plugins
    # from the ConfigMap on PYTHONPATH, and HAProxy started through the guard from there
    # (tests/test_serve_plugins.py imports each entry point from exactly those files).
    for group, pod in PODS.items():
        (c,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert {k: env.get(k) for k in cluster_env.SHARED} == cluster_env.SHARED, group
        assert {"name": "serve-plugins", "mountPath": env["PYTHONPATH"], "readOnly": True} in c["volumeMounts"], group
        assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == f"{env['PYTHONPATH']}/serve_plugins/haproxy_guard.py", group


def test_service_yaml_carries_the_notebooks_cluster_environment():
    assert yaml.safe_load((ROOT / "service.yaml").read_text())["env_vars"] == cluster_env.SHARED


def test_service_yaml_is_an_anyscale_service_config():
    from anyscale.service.models import ServiceConfig

    config = ServiceConfig.from_yaml(str(ROOT / "service.yaml"))
    assert config.name == "deploy-llama-3-70b" and config.applications[0]["import_path"] == "serve_llama_3_1_70b:app"


@pytest.mark.parametrize("tool, args", [("actionlint", []), ("zizmor", ["--offline", ".github/workflows/"])])
def test_workflow_passes_its_linters(tool, args):
    exe = shutil.which(tool, path=str(Path(sys.executable).parent))
    assert exe, f"{tool} is not installed: pip install -r requirements-checks.txt"
    out = subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_anyscale_deploy_adds_the_token_to_service_yaml(monkeypatch, tmp_path):
    from tutorial import anyscale_service

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no token file of this machine's
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="no Hugging Face token"):
        anyscale_service.config_with_token()
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    config = anyscale_service.config_with_token()
    assert config.env_vars == {**cluster_env.SHARED, "HF_TOKEN": "hf_not_a_real_token"}
    assert config.name == "deploy-llama-3-70b"
