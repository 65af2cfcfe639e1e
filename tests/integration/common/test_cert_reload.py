"""A real server picks up a renewed certificate without a restart, the way the kubelet delivers one: new files in a
new directory, then an atomic swap of the `..data` symlink that the mounted names point through."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc import aio

from services.common.channels import open_channel
from services.common.errors import ConfigError
from services.common.security import ReloadingServerCertificate, TlsFiles
from services.common.server import GrpcServer, ServerSettings
from support.certs import CertSet, issue_server_cert, make_certs
from support.echo_service import make_server
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECURITY_LOGGER = "services.common.security"


class MountedSecret:
    """A directory as the kubelet mounts a Secret: each key is a symlink `tls.crt -> ..data/tls.crt`, `..data` is a
    symlink to a timestamped directory, and an update writes a new such directory and swaps `..data` atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()

    def path(self, key: str) -> Path:
        return self.root / key

    def publish(self, files: Mapping[str, bytes]) -> None:
        data = self.root / "..data"
        previous = data.resolve() if data.is_symlink() else None
        version = self.root / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
        version.mkdir()
        for key, content in files.items():
            (version / key).write_bytes(content)
        staged = self.root / "..data_tmp"
        os.symlink(version.name, staged)
        os.replace(staged, data)  # rename(2): readers see the old set or the new one, never a mix
        for key in files:
            if not self.path(key).is_symlink():
                os.symlink(f"..data/{key}", self.path(key))
        if previous is not None:
            for old in previous.iterdir():
                old.unlink()
            previous.rmdir()


@dataclass
class Pair:
    cert: bytes
    key: bytes
    serial: int


def new_pair(certs: CertSet, directory: Path, name: str) -> Pair:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    serial = issue_server_cert(certs, cert, key)
    return Pair(cert.read_bytes(), key.read_bytes(), serial)


def secret_files(pair: Pair, certs: CertSet, key: bytes | None = None) -> dict[str, bytes]:
    return {"tls.crt": pair.cert, "tls.key": pair.key if key is None else key, "ca.crt": certs.ca.read_bytes()}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def pairs(certs: CertSet, tmp_path: Path) -> list[Pair]:
    """Three server certificates of the same CA, each with a key of its own."""
    directory = tmp_path / "issued"
    directory.mkdir()
    issued = [new_pair(certs, directory, f"server-{i}") for i in range(3)]
    assert len({p.serial for p in issued}) == 3
    return issued


def _served_serial(port: int, certs: CertSet, client_cert: bool) -> int:
    """A raw TLS handshake (ALPN h2, as a gRPC client offers) on a new connection: the serial number served."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.set_alpn_protocols(["h2"])
    if client_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


async def served_serial(server: GrpcServer, certs: CertSet, client_cert: bool = False) -> int:
    # In a thread: the blocking handshake must not hold up this loop.
    return await asyncio.to_thread(_served_serial, server.port, certs, client_cert)


async def echo(server: GrpcServer, tls: TlsFiles, text: str = "hello") -> str:
    async with open_channel(f"localhost:{server.port}", tls=tls) as channel:
        reply = await sandbox_pb2_grpc.SandboxServiceStub(channel).Execute(
            sandbox_pb2.ExecuteRequest(code=text), timeout=5
        )
        return reply.stdout


@dataclass
class Running:
    server: GrpcServer
    secret: MountedSecret
    client: TlsFiles  # what a client trusting the CA (and presenting a certificate, with mutual TLS) uses


async def _start(secret: MountedSecret, certs: CertSet, mutual: bool) -> Running:
    settings = ServerSettings(
        tls_cert=secret.path("tls.crt"),
        tls_key=secret.path("tls.key"),
        tls_ca=secret.path("ca.crt") if mutual else None,
    )
    server = make_server(settings)  # the project's GrpcServer, as every service starts it
    await server.start()
    await server.set_serving(True)
    client = TlsFiles(cert=certs.client_cert, key=certs.client_key, ca=certs.ca) if mutual else TlsFiles(ca=certs.ca)
    return Running(server, secret, client)


@pytest.fixture(params=[False, True], ids=["tls", "mutual-tls"])
async def running(
    request: pytest.FixtureRequest, certs: CertSet, pairs: list[Pair], tmp_path: Path
) -> AsyncIterator[Running]:
    secret = MountedSecret(tmp_path / "secret")
    secret.publish(secret_files(pairs[0], certs))
    started = await _start(secret, certs, mutual=request.param)
    yield started
    await started.server.stop(0)


async def test_a_renewed_certificate_is_served_to_new_connections(
    running: Running, certs: CertSet, pairs: list[Pair]
) -> None:
    mutual = running.client.cert is not None
    assert await served_serial(running.server, certs, mutual) == pairs[0].serial
    assert await echo(running.server, running.client) == "hello"

    async with open_channel(f"localhost:{running.server.port}", tls=running.client) as before:
        stub = sandbox_pb2_grpc.SandboxServiceStub(before)
        await stub.Execute(sandbox_pb2.ExecuteRequest(code="before"), timeout=5)

        running.secret.publish(secret_files(pairs[1], certs))

        assert await served_serial(running.server, certs, mutual) == pairs[1].serial
        assert await echo(running.server, running.client, "after") == "after"
        # The connection made before the renewal keeps working until it is aged out.
        assert (await stub.Execute(sandbox_pb2.ExecuteRequest(code="still"), timeout=5)).stdout == "still"

    running.secret.publish(secret_files(pairs[2], certs))
    assert await served_serial(running.server, certs, mutual) == pairs[2].serial
    assert await echo(running.server, running.client) == "hello"


@pytest.mark.parametrize("running", [True], ids=["mutual-tls"], indirect=True)
async def test_mutual_tls_still_demands_a_client_certificate_after_a_renewal(
    running: Running, certs: CertSet, pairs: list[Pair]
) -> None:
    running.secret.publish(secret_files(pairs[1], certs))
    assert await served_serial(running.server, certs, client_cert=True) == pairs[1].serial
    with pytest.raises(aio.AioRpcError) as caught:
        await echo(running.server, TlsFiles(ca=certs.ca))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await echo(running.server, running.client) == "hello"


async def test_a_key_that_does_not_match_keeps_the_old_certificate_serving(
    running: Running, certs: CertSet, pairs: list[Pair], caplog: pytest.LogCaptureFixture
) -> None:
    mutual = running.client.cert is not None
    caplog.set_level(logging.INFO, logger=SECURITY_LOGGER)

    # A renewal whose key belongs to another certificate (a botched Secret, or a half-finished update).
    running.secret.publish(secret_files(pairs[1], certs, key=pairs[2].key))
    for _ in range(3):
        assert await served_serial(running.server, certs, mutual) == pairs[0].serial
        assert await echo(running.server, running.client) == "hello"
    warnings = [r for r in caplog.records if r.name == SECURITY_LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "not a pair" in warnings[0].getMessage()

    # Mended: the next handshake gets the good new certificate.
    running.secret.publish(secret_files(pairs[1], certs))
    assert await served_serial(running.server, certs, mutual) == pairs[1].serial
    assert await echo(running.server, running.client) == "hello"
    reloads = [r for r in caplog.records if r.name == SECURITY_LOGGER and r.getMessage() == "TLS certificate reloaded"]
    assert len(reloads) == 1 and reloads[0].levelno == logging.INFO


async def test_a_half_written_certificate_keeps_the_old_one_serving(
    running: Running, certs: CertSet, pairs: list[Pair]
) -> None:
    mutual = running.client.cert is not None
    running.secret.publish(secret_files(pairs[1], certs) | {"tls.crt": pairs[1].cert[: len(pairs[1].cert) // 2]})
    assert await served_serial(running.server, certs, mutual) == pairs[0].serial
    assert await echo(running.server, running.client) == "hello"


def test_fetch_hands_over_a_configuration_only_when_the_files_changed(
    certs: CertSet, pairs: list[Pair], tmp_path: Path
) -> None:
    secret = MountedSecret(tmp_path / "secret")
    secret.publish(secret_files(pairs[0], certs))
    reloading = ReloadingServerCertificate(
        TlsFiles(secret.path("tls.crt"), secret.path("tls.key"), secret.path("ca.crt"))
    )
    assert reloading.fetch() is None
    secret.publish(secret_files(pairs[0], certs))  # new files, same contents
    assert reloading.fetch() is None
    secret.publish(secret_files(pairs[1], certs))
    first = reloading.sha256
    assert isinstance(reloading.fetch(), grpc.ServerCertificateConfiguration)
    assert reloading.sha256 != first
    assert reloading.fetch() is None


def test_a_mismatched_pair_at_start_up_is_a_configuration_error(
    certs: CertSet, pairs: list[Pair], tmp_path: Path
) -> None:
    secret = MountedSecret(tmp_path / "secret")
    secret.publish(secret_files(pairs[0], certs, key=pairs[1].key))
    with pytest.raises(ConfigError, match="not a pair"):
        ReloadingServerCertificate(TlsFiles(secret.path("tls.crt"), secret.path("tls.key")))
    with pytest.raises(ConfigError, match="cannot read TLS key"):
        ReloadingServerCertificate(TlsFiles(secret.path("tls.crt"), tmp_path / "missing.key"))
