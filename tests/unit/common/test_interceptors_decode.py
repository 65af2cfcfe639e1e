"""Decoding a request happens inside the error interceptor: bytes that are no valid request are INVALID_ARGUMENT,
counted like any other refusal, and still come after the bearer-token check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import InvalidInput
from services.common.interceptors import REQUESTS, ErrorInterceptor, _decoder
from services.common.server import ServerSettings
from support.echo_service import make_server
from thinkmesh.v1 import sandbox_pb2

EXECUTE = "/thinkmesh.v1.SandboxService/Execute"
CORRUPT = b"\x0a\x05ab"  # field 1 says 5 bytes follow; 2 do
NOT_UTF8 = b"\x0a\x02\xc3\x28"  # field 1 (code, a string): a UTF-8 lead byte with no continuation


@pytest_asyncio.fixture
async def address(tmp_path: Path) -> AsyncIterator[str]:
    server = make_server(ServerSettings())
    yield await server.start()
    await server.stop(0)


async def _raw_call(address: str, raw: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> aio.AioRpcError:
    async with aio.insecure_channel(address) as channel:
        with pytest.raises(aio.AioRpcError) as failed:
            await channel.unary_unary(EXECUTE)(raw, timeout=10, metadata=metadata)
    return failed.value


@pytest.mark.parametrize(("raw", "why"), [(CORRUPT, "Wire format was corrupt"), (NOT_UTF8, "bad UTF-8")])
async def test_undecodable_bytes_are_invalid_argument_and_counted(address: str, raw: bytes, why: str) -> None:
    before = REQUESTS.labels(EXECUTE, "INVALID_ARGUMENT")._value.get()
    error = await _raw_call(address, raw)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith("request is not a valid thinkmesh.v1.ExecuteRequest: ") and why in details
    assert REQUESTS.labels(EXECUTE, "INVALID_ARGUMENT")._value.get() == before + 1


async def test_valid_bytes_still_reach_the_servicer_and_health_is_untouched(address: str) -> None:
    async with aio.insecure_channel(address) as channel:
        raw = await channel.unary_unary(EXECUTE)(sandbox_pb2.ExecuteRequest(code="hi").SerializeToString(), timeout=10)
        assert sandbox_pb2.ExecuteResponse.FromString(raw).stdout == "hi"
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING  # started, never marked ready


async def test_a_caller_without_a_token_learns_nothing_about_its_bytes(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("the-token\n")
    server = make_server(ServerSettings(auth_tokens_file=tokens))
    address = await server.start()
    try:
        assert (await _raw_call(address, CORRUPT)).code() == grpc.StatusCode.UNAUTHENTICATED
        with_token = await _raw_call(address, CORRUPT, (("authorization", "Bearer the-token"),))
        assert with_token.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(0)


async def test_the_intercepted_handler_leaves_grpc_no_deserializer_to_fail_in() -> None:
    serialize = sandbox_pb2.ExecuteResponse.SerializeToString
    handler = grpc.unary_unary_rpc_method_handler(lambda r, c: None, sandbox_pb2.ExecuteRequest.FromString, serialize)

    async def continuation(details: Any) -> Any:
        return handler

    wrapped = await ErrorInterceptor().intercept_service(continuation, SimpleNamespace(method=EXECUTE))
    assert wrapped.request_deserializer is None and wrapped.response_serializer is serialize


def test_the_decoder_names_what_it_expected_whatever_the_parser() -> None:
    def pure_python_parser(raw: bytes) -> Any:  # protobuf's Python parser fails on bad UTF-8 like this
        return raw.decode()

    with pytest.raises(InvalidInput, match=r"^request is not a valid request for /x/Y: 'utf-8' codec"):
        _decoder(pure_python_parser, "/x/Y")(b"\xc3\x28")
    assert _decoder(None, "/x/Y")(b"raw") == b"raw"
    assert _decoder(sandbox_pb2.ExecuteRequest.FromString, EXECUTE)(b"\x0a\x01a").code == "a"
