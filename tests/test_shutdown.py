"""The notebook's shutdown stops what the notebook started, and nothing a reader already ran.

Every test here runs beside foreign processes that look like Ray's and vLLM's (a process named
`raylet`, one whose command line reads `VLLM::EngineCore`), each in a session of its own, and
checks they survive:
- the success path: the notebook's own cells in a real kernel, launch through Shut down, after a
  kernel restart and a second Run All that stops at `ray start`;
- an interrupted launch: the `ray start` cell interrupted once the GCS runs, before the cluster
  is written down, and the `serve run` cell once Serve deploys; then Shut down;
- a replica that cannot start: a real engine error (a mistyped engine argument) stops the run at the
  readiness check, well within its deadline, with vLLM's own words, then Shut down;
- a refusal: `bash scripts/tutorial.sh` while another program listens on port 8000, which preflight
  names and leaves alone, as does the script's exit trap.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from tutorial import teardown

pytestmark = pytest.mark.deploys

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def foreign(tmp_path):
    """Processes the tutorial did not start; each must be alive after the test."""
    shutil.copy(shutil.which("sleep"), tmp_path / "raylet")
    procs = [subprocess.Popen([tmp_path / "raylet", "900"], start_new_session=True),
             subprocess.Popen(["bash", "-c", "exec -a VLLM::EngineCore sleep 900"], start_new_session=True)]
    yield procs
    alive = [p.poll() is None for p in procs]
    for p in procs:
        p.kill()
        p.wait()
    assert alive == [True, True], "teardown stopped a process the tutorial did not start"


def code_cells() -> list[str]:
    return [c.source for c in nbformat.read(ROOT / "notebook.ipynb", 4).cells if c.cell_type == "code"]


def cell(cells: list[str], marker: str) -> int:
    (index,) = [i for i, source in enumerate(cells) if marker in source]
    return index


def run(kc, source: str, timeout: float) -> tuple[str, str]:
    """Execute one cell; its status ("ok" or "error") and its printed text."""
    text = []
    reply = kc.execute_interactive(source, timeout=timeout,
                                   output_hook=lambda msg: text.append(msg["content"].get("text", "")))
    return reply["content"]["status"], "".join(text)


@pytest.fixture
def kernel():
    assert teardown.leftovers() == [] and not teardown.port_open()
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT), env={**os.environ, "LLM_PROFILE": "cpu"})
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        left = teardown.leftovers()
        teardown.shutdown()
        assert left == [] and not teardown.port_open(), left


def shut_down(kc, cells: list[str], foreign: list) -> None:
    status, text = run(kc, cells[cell(cells, "serve shutdown -y")], 300)
    assert status == "ok", text[-2000:]
    # The interrupt must not have reached Ray's daemons: serve shutdown got its answer.
    assert "gave up" not in text, text[-2000:]
    assert "port 8000 closed, no Ray or vLLM process of this tutorial left" in text, text[-2000:]
    # `ray stop` would leave the high-throughput mode's HAProxy behind; the notebook's shutdown does not.
    assert [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"] == []
    # It names the foreign processes, left running, and nothing else: no Ray process of the notebook's.
    left = [line for line in text.splitlines() if line.startswith("not started by this tutorial, left running:")]
    assert sorted(left) == sorted(f"not started by this tutorial, left running: {teardown.describe(psutil.Process(p.pid))}"
                                  for p in foreign), text[-2000:]


def test_shutdown_after_a_full_run_a_kernel_restart_and_a_second_run_all_stops_only_ours(foreign, kernel):
    km, kc = kernel
    cells = code_cells()
    for source in cells[:cell(cells, "serve shutdown -y")]:  # the whole tutorial, as a reader runs it
        status, text = run(kc, source, 900)
        assert status == "ok", text[-2000:]
    # The kernel restarts with the deployment up, and the reader runs every cell again without
    # Shut down: Run All stops at `ray start`, which names the cluster already running.
    km.restart_kernel(now=True)
    kc.wait_for_ready(timeout=60)
    for source in cells[:cell(cells, "serve shutdown -y")]:
        status, text = run(kc, source, 900)
        if status == "error":
            break
    assert "setsid --wait ray start --head" in source, f"Run All went on past ray start: {text[-2000:]}"
    assert "but is already running at 127.0.0.1:6379" in text, text[-2000:]
    shut_down(kc, cells, foreign)


def gcs_started() -> bool:
    """`ray start` is under way: the cluster's GCS runs."""
    return any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"]))


def replica_started() -> bool:
    """A replica of the app is starting: Ray names its process after the deployment."""
    return any("ServeReplica:default:LLMServer" in " ".join(p.info["cmdline"] or [])
               for p in psutil.process_iter(["cmdline"]))


@pytest.mark.parametrize("marker, started", [("setsid --wait ray start", gcs_started),
                                             ("serve run serve_llama_3_1_70b:app", replica_started)],
                         ids=["in-ray-start", "in-serve-run"])
def test_an_interrupted_launch_still_shuts_down_cleanly(marker, started, foreign, kernel):
    km, kc = kernel
    cells = code_cells()
    launch = cell(cells, marker)
    for source in cells[:launch]:  # as a reader would: every cell before the launch, in order
        status, text = run(kc, source, 300)
        assert status == "ok", text[-2000:]
    msg_id = kc.execute(cells[launch])
    deadline = time.monotonic() + 120
    while not started() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started(), f"the launch cell never got this far: {started.__doc__}"
    km.interrupt_kernel()
    while True:  # the launch cell ends, interrupted
        reply = kc.get_shell_msg(timeout=120)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "error"  # KeyboardInterrupt: the launch did not finish
    if started is gcs_started:  # before `teardown --remember`: only the launch mark makes the cluster ours
        assert teardown.sessions() == [], "the interrupt came after the cluster was written down"
    shut_down(kc, cells, foreign)


def test_a_replica_that_cannot_start_stops_the_run_within_its_deadline_with_the_engines_error(foreign, kernel, tmp_path):
    # The reader's edit of the Configure cell: fp8 mistyped as fp9, which only the engine checks, in a copy
    # of the repository that links to everything but the deploy file the cell writes.
    for path in ROOT.iterdir():
        if path.name != "serve_llama_3_1_70b.py":
            (tmp_path / path.name).symlink_to(path)
    km, kc = kernel
    cells = code_cells()
    configure, launch = cell(cells, "%%writefile serve_llama_3_1_70b.py"), cell(cells, "serve run serve_llama_3_1_70b:app")
    assert "\nllm_config = LLMConfig(**llm_args)" in cells[configure]
    cells[configure] = cells[configure].replace("\nllm_config = LLMConfig(**llm_args)",
                                                '\nllm_args["engine_kwargs"]["quantization"] = "fp9"\n'
                                                'llm_config = LLMConfig(**llm_args)')
    run(kc, f"import os; os.chdir({str(tmp_path)!r})", 30)  # the %%bash cells run there too
    for source in cells[:launch]:
        status, text = run(kc, source, 300)
        assert status == "ok", text[-2000:]
    start = time.monotonic()
    # Ray 2.60's serve run prints the failed deploy, shuts Serve down and exits 0: the launch cell passes.
    status, launched = run(kc, cells[launch], 900)
    assert status == "ok" and "Deploying application default failed" in launched, launched[-3000:]
    # The readiness check finds no application and fails within its deadline, not at it.
    status, text = run(kc, cells[cell(cells, "wait_until_ready(")], 900)
    assert status == "error" and text.count("Serve app: no application") >= 2, text[-3000:]
    assert time.monotonic() - start < float(os.environ.get("READY_TIMEOUT_S", 1800)), "the deadline, not the failure, ended it"
    # vLLM's own words, raised as the replica builds its engine.
    assert "Unknown quantization method: fp9" in launched + text, (launched + text)[-3000:]
    shut_down(kc, cells, foreign)


def test_a_foreign_listener_on_8000_stops_the_tutorial_and_survives_it(foreign):
    assert teardown.leftovers() == [] and not teardown.port_open()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not teardown.port_open() and time.monotonic() < deadline:
            time.sleep(0.5)
        out = subprocess.run(["bash", "scripts/tutorial.sh"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "LLM_PROFILE": "cpu"})
        assert out.returncode != 0, out.stdout[-3000:]
        assert f"FAIL port 8000: already in use by pid {server.pid} (" in out.stdout, out.stdout[-3000:]
        # Preflight stopped the run before anything started; the exit trap found nothing of ours.
        assert "stopping the" not in out.stdout and "Ray runtime started" not in out.stdout, out.stdout[-3000:]
        assert f"not started by this tutorial, left running: port 8000: pid {server.pid} " in out.stdout
        assert server.poll() is None and teardown.port_open()
    finally:
        server.kill()
        server.wait()
