"""A request that waits on a replica Serve cannot start gets a 503 with Serve's reason, and no other request
is touched. Serve's status is built from Ray's own schema classes, so a change of their shape fails here;
tests/test_serve_deploy.py sends the real case through a live deployment scaled to zero."""

import asyncio
import json
import subprocess
import sys
import time

from serve_plugins.no_replica import SERVE_GAVE_UP, AnswerWhenNoReplicaCanStart

REASON = "The deployment failed to start 3 times in a row. ... No available memory for the cache blocks."


def status(deployment: str, running: int = 0, apps: int = 1):
    # Imported here: Ray fixes its auth mode when imported, and pytest imports every test module first
    # (tests/test_static.py::test_importing_the_helpers_does_not_import_ray).
    from ray.serve._private.common import DeploymentStatus, DeploymentStatusTrigger, ReplicaState
    from ray.serve.schema import ApplicationStatus, ApplicationStatusOverview, DeploymentStatusOverview, ServeStatus

    engine = DeploymentStatusOverview(status=DeploymentStatus(deployment),
                                      status_trigger=DeploymentStatusTrigger.REPLICA_STARTUP_FAILED,
                                      replica_states={ReplicaState.RUNNING: running} if running else {},
                                      message=REASON)
    app = ApplicationStatusOverview(status=ApplicationStatus.RUNNING, message="", last_deployed_time_s=0,
                                    deployments={"LLMServer:my-llama-3_1-70b": engine})
    return ServeStatus(applications={f"app{i}": app for i in range(apps)})


def answering_after(delay_s: float | None):
    """An app that starts its answer after delay_s, or never (None), as a request waiting on no replica."""
    async def app(scope, receive, send):
        await asyncio.sleep(3600 if delay_s is None else delay_s)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.5)  # the stream goes on after its start, past the wait
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    return app


def answering_503(text: bytes, delay_s: float = 0.05):
    """An app that answers 503 with `text` after delay_s, as Serve's proxy does for a deployment it gave up on."""
    async def app(scope, receive, send):
        await asyncio.sleep(delay_s)
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
        await send({"type": "http.response.body", "body": text})
    return app


SERVES_503 = b"Deployment(name='LLMServer:my-llama-3_1-70b', app='default') " + SERVE_GAVE_UP


def call(app, serve_status, timeout_s: float = 5) -> tuple[list[dict], int, float]:
    """What the middleware sent, how often it asked Serve, and the seconds until it returned: until the
    server may close or reuse the connection. `serve_status` is Serve's answer, an error it raises, or a
    function that gives it."""
    sent, asked = [], []

    def ask():
        asked.append(1)
        if isinstance(serve_status, Exception):
            raise serve_status
        return serve_status() if callable(serve_status) else serve_status

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def serve() -> float:
        start = time.monotonic()
        middleware = AnswerWhenNoReplicaCanStart(app, status=ask, wait_s=0.2, poll_s=0.1)
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
        await asyncio.wait_for(middleware(scope, receive, send), timeout_s)
        return time.monotonic() - start

    seconds = asyncio.run(serve())
    return sent, len(asked), seconds


def test_a_request_waiting_on_a_deployment_serve_gave_up_gets_503_with_serves_reason():
    (start, body), asked, _ = call(answering_after(None), status("UNHEALTHY"))
    error = json.loads(body["body"])["error"]
    assert start["status"] == 503 and error["code"] == 503 and asked == 1
    assert "UNHEALTHY" in error["message"] and "No available memory for the cache blocks" in error["message"]
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()


def test_a_quick_answer_passes_untouched_and_never_asks_serve():
    sent, asked, _ = call(answering_after(0), status("UNHEALTHY"))
    assert [m.get("status") for m in sent] == [200, None] and asked == 0


def test_an_answer_that_has_started_is_never_cut():
    # The answer starts within the wait and streams past it, while Serve's status is bad.
    sent, asked, _ = call(answering_after(0.1), status("UNHEALTHY"))
    assert sent[0]["status"] == 200 and sent[-1]["body"] == b"data: [DONE]\n\n" and asked == 0


def test_a_replica_that_may_still_start_or_that_runs_keeps_the_request_waiting():
    for serve_status in (status("UPSCALING"), status("UNHEALTHY", running=1),
                         status("UNHEALTHY", apps=2), RuntimeError("no controller")):
        sent, asked, _ = call(answering_after(0.6), serve_status)
        assert sent[0]["status"] == 200 and asked >= 2, serve_status


def test_a_slow_answer_from_serve_never_holds_back_the_requests_own_answer():
    def slow():
        time.sleep(2)  # Serve's controller slow to answer, or away
        return status("UNHEALTHY")

    sent, _, seconds = call(answering_after(0.3), slow)
    assert seconds < 1.5 and sent[0]["status"] == 200, (seconds, sent)


def test_serves_own_503_for_a_deployment_it_gave_up_on_gets_the_reason():
    # Serve answers itself once the deployment is DEPLOY_FAILED, sooner than the middleware's wait: in plain
    # text, without the engine's error.
    (start, body), asked, _ = call(answering_503(SERVES_503), status("DEPLOY_FAILED"))
    error = json.loads(body["body"])["error"]
    assert start["status"] == 503 and error["code"] == 503 and asked == 1
    assert "DEPLOY_FAILED" in error["message"] and "No available memory for the cache blocks" in error["message"]


def test_any_other_503_or_one_serve_has_no_reason_for_passes_unchanged():
    for text, serve_status in ((b"Request dropped due to backpressure.", status("DEPLOY_FAILED")),
                               (SERVES_503, status("DEPLOY_FAILED", apps=2))):
        (start, body), _, _ = call(answering_503(text), serve_status)
        assert (start["status"], body["body"]) == (503, text), text


def test_another_503_that_streams_past_the_wait_is_never_cut():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(0.6)  # past the wait, while Serve's status is bad
        await send({"type": "http.response.body", "body": b"last"})

    sent, asked, _ = call(app, status("DEPLOY_FAILED"))
    assert [m.get("status") for m in sent] == [503, None, None] and sent[-1]["body"] == b"last" and asked == 0, sent


def test_serves_503_for_a_deployment_it_gave_up_on_still_reads_as_the_middleware_expects():
    # In a child process: Ray fixes its auth mode when imported. This fails once Ray words the answer
    # otherwise, and the middleware would pass it on without the reason.
    code = ("from ray.serve._private.common import DeploymentID; from ray.serve.exceptions import DeploymentUnavailableError; "
            "print(DeploymentUnavailableError(DeploymentID(name='LLMServer:m', app_name='default')).message)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().encode().endswith(SERVE_GAVE_UP), out.stdout[-2000:] + out.stderr[-2000:]
