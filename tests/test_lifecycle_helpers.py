"""The readiness wait and the teardown check, against local sockets: both must fail loudly."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tutorial import ready, teardown

ROOT = Path(__file__).resolve().parent.parent


def test_wait_gives_up_at_its_deadline_with_the_reason(capsys):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=r"not ready within 3 s \(last: no answer"):
        ready.wait_until_ready(base_url=f"http://127.0.0.1:{port}", timeout_s=3, poll_s=1)
    assert "/v1/models: no answer" in capsys.readouterr().out


def test_an_empty_replica_log_is_explained(tmp_path, monkeypatch):
    # No cluster here: log_tail reads this node's files. The high-throughput mode leaves a healthy replica's log empty.
    monkeypatch.setattr(ready, "LOG_DIR", str(tmp_path))
    (tmp_path / "replica_default_LLMServer_x.log").write_text("")
    assert "writes a replica's log at an error or every 1,000 lines" in ready.log_tail()
    (tmp_path / "replica_default_LLMServer_x.log").write_text("INFO Started vLLM engine\n")
    assert "1,000 lines" not in ready.log_tail() and "Started vLLM engine" in ready.log_tail()


# The shape of Serve's controller log after a replica's constructor raised (Ray 2.60, a mistyped engine argument).
CONTROLLER_LOG = """INFO 2026-12-07 20:35:29,100 controller 1 -- Starting Replica(id='a', deployment='LLMServer:m', app='default').
ERROR 2026-12-07 20:35:29,151 controller 1 -- Exception in Replica(id='a', deployment='LLMServer:m', app='default'), the replica will be stopped.
Traceback (most recent call last):
RuntimeError: Failed to create vLLM engine config: an older reason
ERROR 2026-12-07 20:35:48,957 controller 1 -- Exception in Replica(id='b', deployment='LLMServer:m', app='default'), the replica will be stopped.
Traceback (most recent call last):
  File "ray/serve/_private/deployment_state.py", line 1555, in check_ready
    ) = ray.get(self._ready_obj_ref)
  File "ray/llm/_internal/serve/engines/vllm/vllm_engine.py", line 222, in _get_vllm_engine_config
    raise RuntimeError(f"Failed to create vLLM engine config: {e}") from None
RuntimeError: Failed to create vLLM engine config: 1 validation error for ModelConfig
  Value error, Unknown quantization method: fp9. Must be one of ['awq', 'fp8']
    For further information visit https://errors.pydantic.dev/2.14/v/value_error
INFO 2026-12-07 20:35:48,958 controller 1 -- Stopping Replica(id='b', deployment='LLMServer:m', app='default').
"""


def test_a_replica_that_raised_as_it_started_is_shown_from_the_controllers_log(tmp_path, monkeypatch):
    # Its own log is empty: the reason is only in the controller's, which the readiness check then prints.
    monkeypatch.setattr(ready, "LOG_DIR", str(tmp_path))
    (tmp_path / "replica_default_LLMServer_x.log").write_text("")
    (tmp_path / "controller_1.log").write_text(CONTROLLER_LOG)
    tail = ready.log_tail()
    assert "Exception in Replica(id='b'" in tail and "Unknown quantization method: fp9" in tail, tail
    assert "id='a'" not in tail and "Stopping Replica" not in tail, tail  # the last record, and only it
    (tmp_path / "controller_1.log").write_text(CONTROLLER_LOG.split("ERROR", 1)[0])
    assert "raised as it started" not in ready.log_tail()


def serve_8000() -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not teardown.port_open() and time.monotonic() < deadline:
        time.sleep(0.2)
    return server


def test_teardown_stops_an_adopted_listener_on_8000(tmp_path, monkeypatch):
    monkeypatch.setattr(teardown, "RECORD", tmp_path / "record.json")
    server = serve_8000()
    try:
        teardown.remember_session(server.pid)
        process = f"process {teardown.describe(psutil.Process(server.pid))}"
        assert teardown.leftovers() == ["port 8000 is still listening", process]
        assert teardown.main(["--check"]) == 1
        teardown.shutdown()
        assert server.wait(timeout=5) is not None and not teardown.port_open()
        assert teardown.leftovers() == [] and not teardown.RECORD.exists()
    finally:
        server.kill()


def test_teardown_leaves_a_foreign_listener_on_8000_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(teardown, "RECORD", tmp_path / "record.json")
    server = serve_8000()
    try:
        assert teardown.main([]) == 0
        assert server.poll() is None and teardown.port_open()
        out = capsys.readouterr().out
        assert f"not started by this tutorial, left running: port 8000: pid {server.pid} " in out, out
        assert "port 8000 belongs to someone else" in out, out
    finally:
        server.kill()


def test_teardown_refuses_to_adopt_its_own_session(tmp_path, monkeypatch):
    monkeypatch.setattr(teardown, "RECORD", tmp_path / "record.json")
    with pytest.raises(RuntimeError, match="setsid --wait ray start"):
        teardown.remember_session(os.getpid())
    assert not teardown.RECORD.exists()


def test_a_test_that_leaves_a_ray_process_fails_naming_it(tmp_path):
    # conftest.py as a plugin over a test file of its own: the file starts a process that looks
    # like Ray's raylet in a session of its own, as `ray start` does, and never stops it.
    (tmp_path / "test_leak.py").write_text(
        "import subprocess\n"
        "def test_starts_ray_and_forgets():\n"
        "    subprocess.Popen(['bash', '-c', 'exec -a raylet-of-the-leak sleep 600'], start_new_session=True)\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                          str(tmp_path / "test_leak.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "test_leak.py left Ray running" in out.stdout, out.stdout + out.stderr
    assert "raylet-of-the-leak" in out.stdout
    assert not [p for p in teardown.ray_processes() if "raylet-of-the-leak" in " ".join(p.cmdline())]  # and stopped


def test_in_ci_a_skip_fails_unless_the_machine_cannot_run_it(tmp_path):
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "def test_skips_for_a_reason_of_its_own():\n"
        "    pytest.skip('the metrics were not there')\n"
        "def test_skips_for_the_machine():\n"
        "    pytest.skip('this machine cannot act as another account: no root')\n")

    def run(ci: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-s",
                               str(tmp_path / "test_skips.py")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CI": ci})

    out = run("true")
    assert out.returncode == 1 and "1 failed, 1 skipped" in out.stdout, out.stdout + out.stderr
    assert "skipped in CI, where a skip is a failure: the metrics were not there" in out.stdout
    assert "skipped in CI, this machine cannot act as another account: no root: " in out.stdout
    assert "2 skipped" in run("").stdout  # outside CI a skip stays a skip
