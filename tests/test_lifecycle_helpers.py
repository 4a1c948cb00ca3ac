"""The readiness wait and the teardown check, against local sockets: both must fail loudly."""

import socket

import pytest

from tutorial import ready, teardown


def test_wait_gives_up_at_its_deadline_with_the_reason(capsys):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=r"not ready within 3 s \(last: no answer"):
        ready.wait_until_ready(base_url=f"http://127.0.0.1:{port}", timeout_s=3, poll_s=1)
    assert "/v1/models: no answer" in capsys.readouterr().out


def test_teardown_check_sees_a_listener_on_8000():
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", teardown.PORT))
        s.listen()
        assert "port 8000 is still listening" in teardown.leftovers()
    assert teardown.main(["--check"]) == 0
