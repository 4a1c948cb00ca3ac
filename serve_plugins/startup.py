"""A start-up lever of Ray Serve LLM that the small-model profiles use (LLMConfig's callback_config).

Before it starts the engine, each replica runs a "node initialisation" task on every node of its
placement group, which copies the weights from a cloud mirror (CloudMirrorConfig, or an s3:// or
gs:// model_source) to local disk. The small model is on local disk already, so the task only starts
a fresh Ray worker that imports vLLM: 11 s of the 2-core CPU start. The replica imports this module
(by the name in callback_config), so it loads Ray Serve LLM's callback base only there.
"""

from ray.llm._internal.common.callbacks.base import CallbackBase


class WeightsOnLocalDisk(CallbackBase):
    """Skips the node initialisation task: for weights already on every node's disk."""

    async def on_before_node_init(self) -> None:
        self.ctx.run_init_node = False
