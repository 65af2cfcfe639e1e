"""A tiny SandboxService used to test the shared server lifecycle, independent of the real sandbox.

Its `Execute` understands a few commands in `code`: "sleep:MS" sleeps, "" is bad input, "boom" raises an
unexpected error, "busy" raises Overloaded; anything else is echoed back in stdout.
Run as a process: `python -m support.echo_service` (settings from THINKMESH_ECHO_*).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from services.common.errors import InvalidInput, Overloaded
from services.common.server import GrpcServer, ServerSettings, Service, serve, service_name
from services.common.settings import load_settings
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc


@dataclass(frozen=True)
class EchoSettings(ServerSettings):
    SERVICE: ClassVar[str] = "echo"
    ready_delay_s: float = 0.0


class EchoServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self) -> None:
        self.cancelled = 0

    async def Execute(self, request: sandbox_pb2.ExecuteRequest, context: Any) -> sandbox_pb2.ExecuteResponse:
        code = request.code
        if not code:
            raise InvalidInput("code is empty: send the program to run")
        if code == "boom":
            raise RuntimeError("unexpected failure inside the core")
        if code == "busy":
            raise Overloaded("queue full (0 of 0 slots free)")
        if code.startswith("sleep:"):
            try:
                await asyncio.sleep(int(code.removeprefix("sleep:")) / 1000)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return sandbox_pb2.ExecuteResponse(status=sandbox_pb2.EXECUTE_STATUS_OK, stdout=code)


def echo_service(servicer: EchoServicer) -> Service:
    return Service(
        service_name(sandbox_pb2, "SandboxService"),
        lambda server: sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(servicer, server),
    )


def make_server(settings: ServerSettings, servicer: EchoServicer | None = None) -> GrpcServer:
    return GrpcServer(settings, [echo_service(servicer or EchoServicer())])


async def run() -> None:
    settings = load_settings(EchoSettings)

    async def ready() -> None:
        await asyncio.sleep(settings.ready_delay_s)

    await serve(settings, [echo_service(EchoServicer())], ready=ready)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(run())
