"""SandboxService over gRPC: protobuf in, domain objects to the executor, protobuf out. Nothing else."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from grpc import aio

from services.sandbox.model import Program, Result, Status
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

_STATUS = {
    Status.OK: sandbox_pb2.EXECUTE_STATUS_OK,
    Status.ERROR: sandbox_pb2.EXECUTE_STATUS_ERROR,
    Status.TIMEOUT: sandbox_pb2.EXECUTE_STATUS_TIMEOUT,
    Status.MEMORY_LIMIT: sandbox_pb2.EXECUTE_STATUS_MEMORY_LIMIT,
    Status.OUTPUT_LIMIT: sandbox_pb2.EXECUTE_STATUS_OUTPUT_LIMIT,
    Status.KILLED: sandbox_pb2.EXECUTE_STATUS_KILLED,
}
STATUS_FROM_PROTO = {number: status for status, number in _STATUS.items()}


class Executor(Protocol):
    async def execute(self, program: Program, *, deadline: float | None = None) -> Result: ...

    async def execute_batch(self, programs: Sequence[Program], *, deadline: float | None = None) -> list[Result]: ...


def program_from_proto(request: sandbox_pb2.ExecuteRequest) -> Program:
    return Program(code=request.code, timeout_ms=request.timeout_ms, memory_mb=request.memory_mb)


def result_to_proto(result: Result) -> sandbox_pb2.ExecuteResponse:
    return sandbox_pb2.ExecuteResponse(
        status=_STATUS[result.status],
        stdout=result.stdout,
        stderr=result.stderr,
        duration_ms=result.duration_ms,
        truncated=result.truncated,
    )


def result_from_proto(response: sandbox_pb2.ExecuteResponse) -> Result:
    return Result(
        status=STATUS_FROM_PROTO[response.status],
        stdout=response.stdout,
        stderr=response.stderr,
        duration_ms=response.duration_ms,
        truncated=response.truncated,
    )


def _deadline(context: aio.ServicerContext[Any, Any]) -> float | None:
    left = context.time_remaining()
    return None if left is None else time.monotonic() + left


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def Execute(
        self, request: sandbox_pb2.ExecuteRequest, context: aio.ServicerContext[Any, Any]
    ) -> sandbox_pb2.ExecuteResponse:
        result = await self._executor.execute(program_from_proto(request), deadline=_deadline(context))
        return result_to_proto(result)

    async def ExecuteBatch(
        self, request: sandbox_pb2.ExecuteBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> sandbox_pb2.ExecuteBatchResponse:
        programs = [program_from_proto(item) for item in request.requests]
        results = await self._executor.execute_batch(programs, deadline=_deadline(context))
        return sandbox_pb2.ExecuteBatchResponse(results=[result_to_proto(result) for result in results])
