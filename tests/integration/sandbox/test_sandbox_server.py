"""The sandbox as a server: start-up, status codes, drain on SIGTERM, the CLI, and spreading over replicas."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import open_channel
from services.sandbox.layers import LAYER_NAMES
from support.processes import REPO, THINKMESH
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

ZYGOTE_OF = "import os\nprint(os.getppid())"


def _request(code: str, **limits: int) -> sandbox_pb2.ExecuteRequest:
    return sandbox_pb2.ExecuteRequest(code=code, **limits)


async def test_serve_prints_the_address_then_logs_every_layer(start_server: Any) -> None:
    server = start_server()
    assert re.fullmatch(r"127\.0\.0\.1:\d+", server.address)  # the first line, exactly
    async with aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="thinkmesh.v1.SandboxService")
        for _ in range(100):
            if (await health.Check(request, timeout=5)).status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("never became SERVING")
    server.wait_ready()
    logs = server.logs()
    layers = {entry["layer"]: entry for entry in logs if "layer" in entry}
    assert list(layers) == list(LAYER_NAMES)
    for entry in layers.values():
        # An inactive layer is a warning, never a quiet info line.
        assert entry["level"] == ("info" if entry["active"] else "warning")
    ready = next(entry for entry in logs if entry["msg"] == "sandbox ready")
    assert ready["layers_active"] == [name for name in LAYER_NAMES if layers[name]["active"]]


async def test_statuses_and_refusals_over_grpc(start_server: Any) -> None:
    server = start_server(
        {"THINKMESH_SANDBOX_MAX_WORKERS": "1", "THINKMESH_SANDBOX_MAX_QUEUE": "0", "THINKMESH_SANDBOX_MAX_BATCH": "1"}
    )
    async with aio.insecure_channel(server.address) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        reply = await stub.Execute(_request("print(1 / 0)"), timeout=30, wait_for_ready=True)
        assert reply.status == sandbox_pb2.EXECUTE_STATUS_ERROR
        assert reply.stderr.rstrip().endswith("ZeroDivisionError: division by zero")

        with pytest.raises(aio.AioRpcError) as too_big:
            await stub.Execute(_request("#" * (1024 * 1024 + 1)), timeout=10)
        assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "over the limit of 1048576 bytes" in (too_big.value.details() or "")

        with pytest.raises(aio.AioRpcError) as too_long:
            await stub.Execute(_request("print(1)", timeout_ms=600_000), timeout=10)
        assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "maximum of 60000" in (too_long.value.details() or "")

        busy = asyncio.ensure_future(stub.Execute(_request("import time\ntime.sleep(1)"), timeout=30))
        await asyncio.sleep(0.3)
        with pytest.raises(aio.AioRpcError) as full:
            await stub.Execute(_request("print(1)"), timeout=10)
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await busy).status == sandbox_pb2.EXECUTE_STATUS_OK

        with pytest.raises(aio.AioRpcError) as big_batch:
            await stub.ExecuteBatch(sandbox_pb2.ExecuteBatchRequest(requests=[_request("1")] * 2), timeout=10)
        assert big_batch.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_batch_comes_back_in_request_order(start_server: Any) -> None:
    server = start_server()
    async with aio.insecure_channel(server.address) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        codes = [f"import time\ntime.sleep({0.3 - i * 0.05:.2f})\nprint({i})" for i in range(6)] + ["1 / 0"]
        batch = sandbox_pb2.ExecuteBatchRequest(requests=[_request(code) for code in codes])
        replies = (await stub.ExecuteBatch(batch, timeout=30, wait_for_ready=True)).results
    assert [r.stdout for r in replies] == [f"{i}\n" for i in range(6)] + [""]
    assert replies[-1].status == sandbox_pb2.EXECUTE_STATUS_ERROR


async def test_sigterm_lets_the_program_in_flight_finish_then_exits_zero(start_server: Any) -> None:
    server = start_server()
    async with aio.insecure_channel(server.address) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        await stub.Execute(_request("print('warm')"), timeout=30, wait_for_ready=True)
        in_flight = asyncio.ensure_future(
            stub.Execute(_request("import time; time.sleep(1); print('done')"), timeout=30)
        )
        await asyncio.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        reply = await in_flight
        assert (reply.status, reply.stdout) == (sandbox_pb2.EXECUTE_STATUS_OK, "done\n")
    exit_code = await asyncio.get_running_loop().run_in_executor(None, server.process.wait, 30)
    assert exit_code == 0


async def test_round_robin_spreads_calls_over_every_replica(start_server: Any) -> None:
    servers = [start_server() for _ in range(3)]
    zygotes = set()
    for server in servers:
        server.wait_ready()
        ready = next(entry for entry in server.logs() if entry["msg"] == "sandbox ready")
        zygotes.add(ready["zygote_pid"])
    # A headless Service's DNS name resolves to all pod addresses; a static list of them behaves the same.
    target = "ipv4:" + ",".join(server.address for server in servers)
    async with open_channel(target) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        replies = [await stub.Execute(_request(ZYGOTE_OF), timeout=30, wait_for_ready=True) for _ in range(12)]
    served_by = [int(reply.stdout) for reply in replies]
    assert set(served_by) == zygotes
    assert all(served_by.count(pid) >= 2 for pid in zygotes)


def _cli(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [THINKMESH, "sandbox", "run", *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_cli_runs_locally_with_json_output() -> None:
    done = _cli("--json", stdin="import os\nprint(os.getcwd(), 6 * 7)")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"status", "stdout", "stderr", "duration_ms", "truncated"}
    assert (result["status"], result["stdout"], result["truncated"]) == ("ok", "/tmp 42\n", False)


def test_cli_reports_a_timeout_and_fails() -> None:
    done = _cli("--json", "--timeout-ms", "300", stdin="import time\ntime.sleep(5)")
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "timeout"


def test_cli_runs_against_a_server(start_server: Any) -> None:
    server = start_server()
    done = _cli("--target", server.address, stdin="print('remote')\nraise ValueError('nope')")
    assert done.returncode == 1
    assert done.stdout == "remote\n"
    assert "ValueError: nope" in done.stderr
    assert "thinkmesh: error after" in done.stderr
