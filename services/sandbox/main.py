"""`thinkmesh serve sandbox`: the one wiring function of the sandbox service."""

from __future__ import annotations

from typing import Any

from services.common.logs import configure_logging
from services.common.server import Service, serve, service_name
from services.common.settings import load_settings
from services.sandbox.executor import SandboxExecutor
from services.sandbox.servicer import SandboxServicer
from services.sandbox.settings import SandboxSettings
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc


async def run(**overrides: Any) -> None:
    settings = load_settings(SandboxSettings, **{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_format, settings.log_level)
    executor = SandboxExecutor(settings)
    servicer = SandboxServicer(executor)

    async def ready() -> None:
        # The zygote warms up (≈1 s) while health says NOT_SERVING; calls that arrive meanwhile wait for it.
        await executor.start()

    await serve(
        settings,
        [
            Service(
                service_name(sandbox_pb2, "SandboxService"),
                lambda server: sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(servicer, server),
            )
        ],
        ready=ready,
        on_stop=executor.close,
    )
