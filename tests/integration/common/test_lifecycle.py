"""The shared server lifecycle, with a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.channels import open_channel
from services.common.server import ServerSettings
from support.echo_service import EchoServicer, make_server
from support.processes import REPO, server_process
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

ECHO = [sys.executable, "-m", "support.echo_service"]
ECHO_ENV = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


async def _health(address: str, service: str = "") -> int:
    async with aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


async def test_health_goes_serving_only_once_ready() -> None:
    env = {**ECHO_ENV, "THINKMESH_ECHO_READY_DELAY_S": "1.5"}
    with server_process(ECHO, env) as (_, address):
        assert await _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        deadline = time.monotonic() + 10
        while await _health(address) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "never became SERVING"
            await asyncio.sleep(0.1)
        assert await _health(address, "thinkmesh.v1.SandboxService") == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service() -> None:
    server = make_server(ServerSettings())
    address = await server.start()
    try:
        async with aio.insecure_channel(address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5):
                names = {s.name for s in reply.list_services_response.service}
                break
        assert "thinkmesh.v1.SandboxService" in names
        assert "grpc.health.v1.Health" in names
    finally:
        await server.stop(0)


async def test_sigterm_drains_in_flight_call_then_exits_zero() -> None:
    with server_process(ECHO, ECHO_ENV) as (proc, address):
        async with aio.insecure_channel(address) as channel:
            stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
            await stub.Execute(sandbox_pb2.ExecuteRequest(code="warm"), timeout=5, wait_for_ready=True)
            in_flight = asyncio.ensure_future(stub.Execute(sandbox_pb2.ExecuteRequest(code="sleep:1500"), timeout=10))
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # Once draining, new calls are refused while the in-flight one runs to its end.
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.Execute(sandbox_pb2.ExecuteRequest(code="late"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            reply = await in_flight
            assert reply.stdout == "sleep:1500"
        exit_code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20)
        assert exit_code == 0


async def test_deadline_is_honoured_and_cancels_the_work() -> None:
    servicer = EchoServicer()
    server = make_server(ServerSettings(), servicer)
    address = await server.start()
    try:
        async with aio.insecure_channel(address) as channel:
            stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
            started = time.monotonic()
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.Execute(sandbox_pb2.ExecuteRequest(code="sleep:10000"), timeout=0.3)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 2
            for _ in range(50):  # the server side notices shortly after the client gives up
                if servicer.cancelled:
                    break
                await asyncio.sleep(0.05)
            assert servicer.cancelled == 1
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT, "code is empty"),
        ("busy", grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full"),
        ("boom", grpc.StatusCode.INTERNAL, "internal error: RuntimeError"),
    ],
)
async def test_exceptions_map_to_status_codes_and_the_server_survives(
    code: str, status: grpc.StatusCode, message: str
) -> None:
    server = make_server(ServerSettings())
    address = await server.start()
    try:
        async with open_channel(address) as channel:
            stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.Execute(sandbox_pb2.ExecuteRequest(code=code), timeout=5)
            assert caught.value.code() == status
            assert message in (caught.value.details() or "")
            reply = await stub.Execute(sandbox_pb2.ExecuteRequest(code="still alive"), timeout=5)
            assert reply.stdout == "still alive"
    finally:
        await server.stop(0)


async def test_concurrency_bound_answers_resource_exhausted() -> None:
    server = make_server(ServerSettings(max_concurrent_rpcs=2))
    address = await server.start()
    try:
        async with aio.insecure_channel(address) as channel:
            stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
            calls = [stub.Execute(sandbox_pb2.ExecuteRequest(code="sleep:800"), timeout=5) for _ in range(4)]
            results = await asyncio.gather(*calls, return_exceptions=True)
        refused = [r for r in results if isinstance(r, aio.AioRpcError)]
        assert len(refused) == 2
        assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    finally:
        await server.stop(0)


async def test_oversized_message_is_refused() -> None:
    server = make_server(ServerSettings(max_message_mb=1))
    address = await server.start()
    try:
        async with aio.insecure_channel(address) as channel:
            stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.Execute(sandbox_pb2.ExecuteRequest(code="x" * (2 * 1024 * 1024)), timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(0)


async def test_a_reload_takes_the_server_out_of_readiness_but_not_of_liveness() -> None:
    """What a model service's `replace` reload reports (hot_reload.ModelSource.report_serving_to): readiness
    NOT_SERVING while it loads, SERVING after; the liveness name stays SERVING throughout, so the kubelet does not
    restart a pod that is only loading a model."""
    from services.common.server import LIVENESS, serve
    from support.echo_service import echo_service

    addresses: list[str] = []
    reporters: list[Callable[[bool], Awaitable[None]]] = []
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=1)
    server = asyncio.create_task(
        serve(
            settings,
            [echo_service(EchoServicer())],
            announce=lambda line: addresses.append(line.rsplit(" ", 1)[1]),
            health=reporters.append,
        )
    )
    try:
        while not addresses:
            await asyncio.sleep(0.05)
        (address,) = addresses
        deadline = time.monotonic() + 10
        while await _health(address) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        (report,) = reporters
        await report(False)  # a reload released the model
        assert await _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _health(address, "thinkmesh.v1.SandboxService") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _health(address, LIVENESS) == health_pb2.HealthCheckResponse.SERVING
        await report(True)  # the new model serves
        assert await _health(address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(server, 30)
