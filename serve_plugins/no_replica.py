"""A 503 with Serve's reason, not an endless wait, for a request that waits on a replica Serve cannot start.

With min_replicas 0, a request that finds no replica waits in Serve's Python proxy (HAProxy's fallback)
while Serve starts one. When the replica cannot start (a bad engine argument, too little memory), Serve
marks the deployment UNHEALTHY and, for a deployment that ran before, keeps trying and never answers the
waiting request: only the client's own timeout ends it. A deployment that never ran it gives up on after
three failed starts (DEPLOY_FAILED, ray-project/ray#51600), and then answers 503 in plain text that names
the deployment but not the engine's error (Ray 2.60). This middleware, in Serve's Python proxy only
(proxy.middlewares installs it there, not in the replicas that HAProxy sends requests to directly), asks
Serve's status about a request that has had no answer for WAIT_S. Once a deployment is UNHEALTHY or
DEPLOY_FAILED with no replica running, it answers 503 with Serve's message, which quotes the engine's
error, and drops the request; Serve's own 503 for it gets the same answer. Serve's status does not say
which application a path reaches, so it acts only where the cluster runs one application, as the
tutorial's does. A request whose answer has started is never touched.
"""

import asyncio
import json
import time

WAIT_S = 5  # an answer that starts sooner never asks Serve
POLL_S = 2  # how often a waiting request asks, shared by all requests of one server
BROKEN = ("UNHEALTHY", "DEPLOY_FAILED")
# The end of Serve's 503 for a deployment it gave up on (ray.serve.exceptions.DeploymentUnavailableError).
SERVE_GAVE_UP = b"is unavailable because it failed to deploy."


def in_serve_proxy() -> bool:
    """Whether this process is Serve's Python proxy (an actor Ray names SERVE_PROXY_ACTOR-<node id>): the one
    server where a request waits for a replica. A replica answering HAProxy directly is one already."""
    import ray

    return ray.is_initialized() and (ray.get_runtime_context().get_actor_name() or "").startswith("SERVE_PROXY_ACTOR-")


def serve_status():
    from ray import serve

    return serve.status()


def cannot_start(status) -> str | None:
    """Serve's reason when the cluster's one application has a deployment that Serve could not start
    and no replica of it runs; None while a replica runs or may still start."""
    if len(status.applications) != 1:
        return None
    (app,) = status.applications.values()
    for name, deployment in app.deployments.items():
        if deployment.status in BROKEN and not deployment.replica_states.get("RUNNING"):
            return f"Serve reports deployment {name} {deployment.status.value}: {deployment.message}"
    return None


def unavailable(reason: str) -> bytes:
    return json.dumps({"error": {
        "message": f"No replica of the model could start, so this request was not answered. {reason}",
        "type": "ServiceUnavailableError", "code": 503}}).encode()


class AnswerWhenNoReplicaCanStart:
    """Pure ASGI middleware: runs the request, and answers 503 for it if it waits on a deployment that
    Serve gave up starting."""

    def __init__(self, app, status=serve_status, wait_s: float = WAIT_S, poll_s: float = POLL_S):
        self.app, self.status, self.wait_s, self.poll_s = app, status, wait_s, poll_s
        self.answer, self.asked_at = None, float("-inf")

    def ask(self) -> asyncio.Future:
        """Serve's reason, asked at most once per poll_s for all the waiting requests of this server."""
        if self.answer is None or self.answer.done() and time.monotonic() - self.asked_at >= self.poll_s:
            self.asked_at = time.monotonic()
            self.answer = asyncio.ensure_future(self._why())
        return self.answer

    async def _why(self) -> str | None:
        try:
            return cannot_start(await asyncio.to_thread(self.status))
        except Exception:  # Serve's controller away or restarting: keep waiting, as Serve would
            return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, given_up, held = False, False, None

        async def give_up(reason: str) -> None:
            nonlocal given_up
            if given_up:
                return
            given_up = True
            body = unavailable(reason)
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        async def send_unless_given_up(message):
            nonlocal started, held
            if given_up:
                return
            if message["type"] == "http.response.start" and message["status"] == 503:
                held = message  # until its body shows whether it is Serve's own, without the reason
                return
            if held is not None:
                # Still held while Serve is asked, so the waiting loop leaves the answer to this path.
                if (not message.get("more_body") and message.get("body", b"").endswith(SERVE_GAVE_UP)
                        and (reason := await self.ask())):
                    held = None
                    await give_up(reason)
                    return
                start, held, started = held, None, True
                await send(start)
            started = started or message["type"] == "http.response.start"
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_unless_given_up))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.wait_s)
            while not done and not started and held is None:
                # The request goes on while Serve is asked: its answer may come first.
                asking = self.ask()
                done, _ = await asyncio.wait({task, asking}, return_when=asyncio.FIRST_COMPLETED)
                if task in done or started or held is not None:
                    break
                if reason := asking.result():
                    await give_up(reason)
                    task.cancel()
                    return
                done, _ = await asyncio.wait({task}, timeout=self.poll_s)
            await task
        finally:
            if not task.done():
                task.cancel()
