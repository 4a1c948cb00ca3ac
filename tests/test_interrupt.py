"""A reader who interrupts the kernel while the deployment launches can still shut it down.

Runs the notebook's own cells in a real kernel: every code cell up to `ray start`, then the
launch cell, interrupted once Serve is deploying; then the notebook's Shut down cell, which must
succeed and leave nothing running.
"""

import os
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import start_new_kernel

from tutorial import teardown

ROOT = Path(__file__).resolve().parent.parent


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


def test_interrupted_launch_still_shuts_down_cleanly():
    assert teardown.leftovers() == []
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT), env={**os.environ, "LLM_PROFILE": "cpu"})
    try:
        cells = code_cells()
        launch = cell(cells, "serve run serve_llama_3_1_70b:app")
        for source in cells[:launch]:  # as a reader would: every cell before the launch, in order
            status, text = run(kc, source, 300)
            assert status == "ok", text[-2000:]
        msg_id = kc.execute(cells[launch])
        deadline = time.monotonic() + 120
        while not teardown.port_open() and time.monotonic() < deadline:  # Serve's proxy is up: deploying
            time.sleep(1)
        assert teardown.port_open(), "serve run never started the proxy"
        km.interrupt_kernel()
        while True:  # the launch cell ends, interrupted
            reply = kc.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error"  # KeyboardInterrupt: the launch did not finish
        status, text = run(kc, cells[cell(cells, "serve shutdown -y")], 300)
        assert status == "ok", text[-2000:]
        # The interrupt must not have reached Ray's daemons: serve shutdown got its answer.
        assert "gave up" not in text, text[-2000:]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        left = teardown.leftovers()
        teardown.shutdown()
    assert left == [], left
