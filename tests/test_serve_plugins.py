"""What Ray loads by name ships whole: every entry point imports in a fresh interpreter whose path holds
only what the KubeRay ConfigMap ships, built from the notebook's own `kubectl create configmap` command
and mounted as k8s/rayservice.yaml mounts it. A new import that the ConfigMap lacks fails here with the
missing module's name, not in a reader's cluster."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = json.loads((ROOT / "notebook.ipynb").read_text())
CODE = "\n".join("".join(c["source"]) for c in NOTEBOOK["cells"] if c["cell_type"] == "code")
MANIFEST = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
CLUSTER = MANIFEST["spec"]["rayClusterConfig"]
PODS = {"head": CLUSTER["headGroupSpec"]["template"]["spec"],
        **{g["groupName"]: g["template"]["spec"] for g in CLUSTER["workerGroupSpecs"]}}


def configmaps() -> dict[str, dict[str, Path]]:
    """Each ConfigMap the notebook creates: its keys and the repository file each key holds."""
    made = {}
    for line in CODE.splitlines():
        argv = shlex.split(line) if line.startswith("kubectl create configmap ") else []
        if argv:
            keys = {}
            for a in argv[4:]:
                src = ROOT / a.split("=", 1)[1]
                files = sorted(p for p in src.iterdir() if p.is_file()) if src.is_dir() else [src]
                keys.update({f.name: f for f in files})  # kubectl names each key after its file
            made[argv[3]] = keys
    return made


def mount(pod: dict, container: dict, root: Path) -> dict[str, str]:
    """Lay out under `root` what `container` sees of the ConfigMaps; return its environment, paths
    moved under `root`."""
    made = configmaps()
    volumes = {v["name"]: v for v in pod["volumes"] if "configMap" in v}
    moved = {}
    for m in container["volumeMounts"]:
        if m["name"] in volumes:
            cm = volumes[m["name"]]["configMap"]
            assert cm["name"] in made, f"the pod mounts ConfigMap {cm['name']}, which the notebook never creates"
            for item in cm["items"]:
                assert item["key"] in made[cm["name"]], f"ConfigMap {cm['name']} has no key {item['key']}"
                dest = root / m["mountPath"].lstrip("/") / item["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(made[cm["name"]][item["key"]], dest)
                dest.chmod(cm.get("defaultMode", 0o644))
            moved[m["mountPath"]] = str(root / m["mountPath"].lstrip("/"))
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for k, v in env.items():
        for path, there in moved.items():
            env[k] = v.replace(path, there)
    return env


ENTRY_POINTS = """
import importlib, os, sys
def load(path):
    module, _, attr = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), attr)
os.environ["SERVE_API_KEY"] = "k"  # the key check's branch too
middlewares = load(os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"])()
assert len(middlewares) == 2, middlewares  # outside a Serve proxy actor
load(sys.argv[1])  # the profiles' LLMConfig callback_class
print("imported from", sorted({m.__file__ for m in sys.modules.values()
                                if (getattr(m, "__file__", None) or "").startswith(sys.argv[2])}))
"""


def test_every_entry_point_imports_from_what_the_configmap_ships(tmp_path):
    from tutorial.profiles import overlay_serve_config

    (app,) = overlay_serve_config(ROOT / "serve_config.yaml", "cpu")["applications"]
    callback = app["args"]["llm_configs"][0]["callback_config"]["callback_class"]
    for group, pod in PODS.items():
        (container,) = pod["containers"]
        root = tmp_path / group
        env = mount(pod, container, root)
        # -P and a cwd outside the repository: nothing of it is importable but the mounted files.
        out = subprocess.run([sys.executable, "-P", "-c", ENTRY_POINTS, callback, str(root)], cwd=tmp_path,
                             env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{group}: a Serve HTTP server could not import its callback:\n{out.stderr[-3000:]}"
        # HAProxy's program: the guard, as shipped, runnable.
        guard = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
        assert guard.stat().st_mode & 0o111 and guard.read_text().startswith("#!/usr/bin/env python3"), group


def test_the_configmap_is_the_whole_package():
    # Every file of serve_plugins/, so a module added there ships without an edit of the manifest.
    (keys,) = configmaps().values()
    shipped = {p.name for p in (ROOT / "serve_plugins").glob("*.py")}
    assert set(keys) == shipped
    for group, pod in PODS.items():
        (volume,) = [v for v in pod["volumes"] if "configMap" in v]
        assert {i["key"] for i in volume["configMap"]["items"]} == shipped, group


def test_the_package_imports_nothing_else_of_the_repository():
    project = {p.stem for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()} - {"serve_plugins"}
    for path in (ROOT / "serve_plugins").glob("*.py"):
        imported = {m.split(".")[0] for m in re.findall(r"^\s*(?:from|import) ([\w.]+)", path.read_text(), re.M)}
        assert not imported & project, f"{path.name} imports {imported & project}"
