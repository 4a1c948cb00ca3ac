"""`serve deploy`, as serve_config.yaml's header tells a reader to run it, on the small model: the file's
LLM config with the cpu profile's overlay (python -m tutorial.profiles), onto a cluster started in the
notebook's environment (serve_plugins/cluster_env.py) with the API key check on. Real Ray, real vLLM."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from lab import launch
from serve_plugins.api_key import KEY_ENV
from tutorial import facts, ready, teardown

ROOT = Path(__file__).resolve().parent.parent
KEY = "deploy-test-key"
pytestmark = pytest.mark.deploys


def overlay(tmp: Path, **changes) -> Path:
    """serve_config.yaml for this machine, made the documented way; `changes` then edit its LLM config."""
    out = subprocess.run([sys.executable, "-m", "tutorial.profiles", "serve_config.yaml"], cwd=ROOT, check=True,
                         env={**os.environ, "LLM_PROFILE": "cpu"}, capture_output=True, text=True, timeout=120).stdout
    config = yaml.safe_load(out)
    config["applications"][0]["args"]["llm_configs"][0].update(changes)
    path = tmp / "serve_config.local.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-deploy")
    os.environ[KEY_ENV] = KEY  # the readiness check sends it too
    try:
        with launch.Deployment(str(overlay(tmp)), {KEY_ENV: KEY}, tmp / "launch.log", ready_s=600,
                               preflight=True) as d:
            yield d, tmp
    finally:
        del os.environ[KEY_ENV]
    # Deployment's exit raises if anything of it is left; nothing listens on the endpoint either.
    assert not teardown.port_open() and not teardown.leftovers()


def test_serve_deploy_answers_with_the_key(deployed):
    client = OpenAI(base_url=f"{ready.BASE_URL}/v1", api_key=KEY, timeout=120)
    answer = client.chat.completions.create(model=facts.MODEL_ID, temperature=0, max_tokens=64,
                                            messages=[{"role": "user", "content": "What is 2 + 2?"}])
    assert "4" in answer.choices[0].message.content, answer


@pytest.mark.parametrize("header", [None, "Bearer wrong-key"])
def test_serve_deploy_refuses_a_request_without_the_key(deployed, header):
    req = urllib.request.Request(f"{ready.BASE_URL}/v1/models", headers={"Authorization": header} if header else {})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 401 and b"invalid_api_key" in e.value.read()


def test_serve_status_reports_the_files_application_running(deployed):
    out = subprocess.run(["serve", "status"], env=deployed[0].env, capture_output=True, text=True, timeout=60)
    apps = yaml.safe_load(out.stdout)["applications"]
    assert apps["llama-3-1-70b"]["status"] == "RUNNING", out.stdout


def test_the_deployment_runs_in_the_notebooks_mode(deployed):
    # HAProxy on port 8000 (the high-throughput mode), on loopback only.
    from tutorial.access import listeners

    assert listeners() == {f"{facts.HTTP_HOST}:{facts.HTTP_PORT}": "haproxy"}


def test_preflight_names_a_gpu_type_no_node_has(deployed):
    # Before `serve deploy` of such a file, which would wait forever for a node that never comes.
    wrong = overlay(deployed[1], accelerator_type="H100", placement_group_config=None)
    out = subprocess.run([sys.executable, "-m", "tutorial.preflight", "--serve-config", str(wrong)], cwd=ROOT,
                         env=deployed[0].env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "FAIL GPUs: the config needs 1 x H100" in out.stdout, out.stdout + out.stderr


def test_a_replica_that_cannot_start_from_zero_answers_the_waiting_request_503_with_the_engines_error(deployed):
    # Last of the file: the reader's update of the running app scales it to zero, with fp8 mistyped as fp9,
    # which only the engine checks. The first request waits on a replica Serve cannot start, or, where Serve
    # already tried the new version's replicas and gave up, gets Serve's own 503 at once: either way the
    # answer carries the engine's error (tests/test_no_replica.py holds both paths).
    from lab.scale_to_zero import engine_processes

    d, tmp = deployed
    config = yaml.safe_load(overlay(tmp).read_text())
    (llm,) = config["applications"][0]["args"]["llm_configs"]
    llm["deployment_config"]["autoscaling_config"].update(min_replicas=0, initial_replicas=0)
    llm["engine_kwargs"]["quantization"] = "fp9"
    broken = tmp / "broken.yaml"
    broken.write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run(["serve", "deploy", str(broken)], env=d.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 300  # the old replica goes: nothing runs until a request comes
    while engine_processes() and time.monotonic() < deadline:
        time.sleep(2)
    assert not engine_processes()
    start = time.monotonic()
    answer = httpx.post(f"{ready.BASE_URL}/v1/chat/completions", timeout=900, headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": facts.MODEL_ID, "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    waited = time.monotonic() - start
    error = answer.json()["error"]
    assert answer.status_code == 503 and error["code"] == 503, answer.text[:2000]
    # Serve's reason quotes vLLM's own words, well before the client's timeout; nothing holds the memory.
    assert "Unknown quantization method: fp9" in error["message"] and waited < 600, (waited, error)
    # serve_plugins/no_replica.py answered, or gave Serve's own plain 503 the reason.
    assert error["message"].startswith("No replica of the model could start"), error
    print(f"503 after {waited:.0f} s")
    assert not engine_processes()
