"""TLS, mutual TLS and bearer tokens on a real server: the right client gets through, others do not."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import open_channel
from services.common.security import TlsFiles
from services.common.server import GrpcServer, ServerSettings
from support.certs import CertSet, make_certs
from support.echo_service import make_server
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

REQUEST = sandbox_pb2.ExecuteRequest(code="hello")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return make_certs(tmp_path_factory.mktemp("certs"))


async def _started(settings: ServerSettings) -> tuple[GrpcServer, str]:
    server = make_server(settings)
    address = await server.start()
    await server.set_serving(True)
    return server, address


async def _call(address: str, **channel_args: object) -> str:
    async with open_channel(address, **channel_args) as channel:  # type: ignore[arg-type]
        reply = await sandbox_pb2_grpc.SandboxServiceStub(channel).Execute(REQUEST, timeout=5)
        return reply.stdout


@pytest.fixture
async def tls_server(certs: CertSet) -> AsyncIterator[str]:
    server, address = await _started(ServerSettings(tls_cert=certs.server_cert, tls_key=certs.server_key))
    yield address.replace("127.0.0.1", "localhost")
    await server.stop(0)


async def test_tls_client_gets_through(tls_server: str, certs: CertSet) -> None:
    assert await _call(tls_server, tls=TlsFiles(ca=certs.ca)) == "hello"


async def test_plaintext_client_is_refused_by_a_tls_server(tls_server: str) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await _call(tls_server)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_admits_only_clients_with_a_certificate(certs: CertSet) -> None:
    settings = ServerSettings(tls_cert=certs.server_cert, tls_key=certs.server_key, tls_ca=certs.ca)
    server, address = await _started(settings)
    address = address.replace("127.0.0.1", "localhost")
    try:
        with pytest.raises(aio.AioRpcError) as caught:
            await _call(address, tls=TlsFiles(ca=certs.ca))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        client = TlsFiles(cert=certs.client_cert, key=certs.client_key, ca=certs.ca)
        assert await _call(address, tls=client) == "hello"
    finally:
        await server.stop(0)


@pytest.fixture
async def token_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    tokens = tmp_path / "tokens"
    tokens.write_text("first-token\n\nsecond-token\n")
    server, address = await _started(ServerSettings(auth_tokens_file=tokens))
    yield address, tokens
    await server.stop(0)


async def test_a_listed_token_gets_through(token_server: tuple[str, Path]) -> None:
    address, _ = token_server
    assert await _call(address, token="second-token") == "hello"


@pytest.mark.parametrize("token", [None, "wrong-token", "first-token-but-longer"])
async def test_missing_or_wrong_token_is_unauthenticated(token_server: tuple[str, Path], token: str | None) -> None:
    address, _ = token_server
    with pytest.raises(aio.AioRpcError) as caught:
        await _call(address, token=token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_needs_no_token(token_server: tuple[str, Path]) -> None:
    address, _ = token_server
    async with aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_rotated_token_file_takes_effect_without_restart(token_server: tuple[str, Path]) -> None:
    address, tokens = token_server
    tokens.write_text("rotated-token\n")
    stat = tokens.stat()
    os.utime(tokens, (stat.st_atime, stat.st_mtime + 5))  # mtime granularity: make the change visible
    assert await _call(address, token="rotated-token") == "hello"
    with pytest.raises(aio.AioRpcError):
        await _call(address, token="first-token")


def test_plaintext_off_loopback_must_be_explicit() -> None:
    from services.common.errors import ConfigError

    with pytest.raises(ConfigError, match="THINKMESH_SERVER_INSECURE"):
        ServerSettings(host="0.0.0.0").validate()
    replace(ServerSettings(host="0.0.0.0"), insecure=True).validate()
