"""The launch recipe that experiments use (lab/launch.py) is the notebook's: same commands, same flags,
same environment. Nothing is started."""

import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat

from lab import launch
from serve_plugins import cluster_env, haproxy_files

ROOT = Path(__file__).resolve().parent.parent
CODE = [c.source for c in nbformat.read(ROOT / "notebook.ipynb", as_version=4).cells if c.cell_type == "code"]
CPUS = "{cpus}"


def notebook_commands() -> list[list[str]]:
    """The launch cells' commands, from the cluster token to `serve run`, without their deadlines."""
    text = "\n".join(CODE)
    first, last = text.index("ray get-auth-token"), text.index("serve run")
    commands = []
    for line in text[first:text.index("\n", last)].replace("\\\n", " ").splitlines():
        if re.match(r"(ray|setsid|python|timeout) ", line):
            argv = shlex.split(re.split(r" > /dev/null| \|\|", line)[0].rstrip(" \\"))
            argv = argv[2:] if argv[0] == "timeout" else argv
            commands.append([CPUS if "nproc" in a else re.sub(r"\$\{\w+:-([^}]+)\}", r"\1", a) for a in argv])
    return commands


def test_the_launch_recipe_runs_the_notebooks_commands():
    ours = [[CPUS if prev == "--num-cpus" else "python" if a == sys.executable else a
             for prev, a in zip([""] + argv, argv)] for argv, _ in launch.steps(8, "serve_llama_3_1_70b:app")]
    assert ours == notebook_commands()


def test_the_launch_recipe_sets_the_notebooks_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(haproxy_files, "FOLDER", tmp_path / "haproxy")
    environ: dict = {}
    for cell in CODE[:[i for i, c in enumerate(CODE) if "ray get-auth-token" in c][0]]:
        if re.search(r"os\.environ(\[.*\] =|\.update|\.setdefault)", cell):
            # Its own `import os` left out, so the cell writes into `environ`, not this process's environment.
            exec(cell.replace("import os\n", ""), {"os": SimpleNamespace(environ=environ)})
    deployment = launch.Deployment("serve_llama_3_1_70b:app", {}, tmp_path / "log", ready_s=1)
    # Each launch has a mark of its own: its processes are the ones its teardown stops.
    mark = cluster_env.LAUNCH_MARK
    assert environ[mark] and deployment.env[mark] and environ.pop(mark) != deployment.env[mark]
    ours = {k: v for k, v in deployment.env.items() if k in environ}
    assert environ and ours == environ and deployment.env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_extra_nodes_join_the_head_with_their_own_gpus_ports_and_one_proxy():
    node = launch.Node(gpus="1", num_cpus=8)
    commands = launch.steps(8, "app:app", head_gpus="0", workers=(node,))
    argv = [" ".join(a) for a, _ in commands]
    assert "--num-gpus 1" in argv[1] and commands[1][1] == {"CUDA_VISIBLE_DEVICES": "0"}
    joined = [(a, env) for a, env in commands if "--address" in a]
    assert len(joined) == 1 and joined[0][1] == {"CUDA_VISIBLE_DEVICES": "1"}
    assert any(a.endswith(f"--remember {node.node_manager_port}") for a in argv)
    assert "--proxy-location HeadOnly" in next(a for a in argv if a.startswith("serve start"))
