"""The one gRPC server lifecycle every thinkmesh service runs.

    settings ──► GrpcServer(settings, [Service...]) ──► serve():
        start (health NOT_SERVING) → print "listening on HOST:PORT" → ready() (e.g. load a model)
        → health SERVING → … SIGTERM/SIGINT → health NOT_SERVING, refuse new calls,
        finish in-flight calls within drain_seconds → on_stop() → return

Every server gets: the error/metrics interceptor, bearer-token auth when a token file is set, TLS (mutual when
a CA is set; renewed files are served to new connections without a restart: services/common/security.py),
standard health and reflection, message size limits and a bound on concurrent RPCs (beyond it gRPC answers
RESOURCE_EXHAUSTED). Nothing here knows what a service does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.errors import ConfigError
from services.common.interceptors import BearerTokenInterceptor, ErrorInterceptor
from services.common.security import TlsFiles, TokenFile, server_credentials
from services.common.settings import require

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
# The health name the liveness probe checks: SERVING while the server runs, whatever readiness says.
LIVENESS = "thinkmesh.liveness"


@dataclass(frozen=True)
class ServerSettings:
    """Settings every server shares; each service's settings class extends this one."""

    SERVICE: ClassVar[str] = "server"

    host: str = "127.0.0.1"
    port: int = 0
    # Prometheus metrics over HTTP on this port; unset = no metrics endpoint.
    metrics_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # With a CA, clients must present a certificate it signed (mutual TLS).
    tls_ca: Path | None = None
    # One accepted bearer token per line; unset = no authentication.
    auth_tokens_file: Path | None = None
    # Plaintext is allowed on loopback; anywhere else only when this is set explicitly.
    insecure: bool = False
    max_message_mb: int = 64
    max_concurrent_rpcs: int = 256
    # Shorter than the pod's terminationGracePeriodSeconds (30 s by default).
    drain_seconds: float = 20.0
    # A client connection is asked to move on (GOAWAY) after this long, so clients re-resolve a headless
    # Service's DNS and a new replica gets its share of calls within about this time (0 = never). Calls in
    # flight then have `max_connection_age_grace_s` to finish: the longest call anywhere (a search's deadline).
    max_connection_age_s: float = 30.0
    max_connection_age_grace_s: float = 600.0
    log_format: str = "json"
    log_level: str = "INFO"

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_ca)

    def validate(self) -> None:
        require(0 <= self.port <= 65535, self, "port", "must be between 0 and 65535")
        require(self.max_message_mb > 0, self, "max_message_mb", "must be positive")
        require(self.max_concurrent_rpcs > 0, self, "max_concurrent_rpcs", "must be positive")
        require(self.drain_seconds >= 0, self, "drain_seconds", "must not be negative")
        require(self.max_connection_age_s >= 0, self, "max_connection_age_s", "must not be negative (0 = never)")
        require(self.max_connection_age_grace_s >= 0, self, "max_connection_age_grace_s", "must not be negative")
        require(self.log_format in ("json", "text"), self, "log_format", "must be 'json' or 'text'")
        require((self.tls_cert is None) == (self.tls_key is None), self, "tls_key", "set tls_cert and tls_key together")
        require(self.tls_ca is None or self.tls_cert is not None, self, "tls_ca", "mutual TLS needs tls_cert too")
        require(
            self.tls_cert is not None or self.insecure or is_loopback(self.host),
            self,
            "insecure",
            f"refusing plaintext on non-loopback host {self.host!r}: set tls_cert/tls_key, or set insecure=true",
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Service:
    """A servicer to register, with its full name (for health and reflection)."""

    name: str
    register: Callable[[aio.Server], None]


def service_name(module: Any, service: str) -> str:
    """`service_name(sandbox_pb2, "SandboxService")` → "thinkmesh.v1.SandboxService"."""
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


def connection_age_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """gRPC core's connection ageing (with jitter of its own), from the settings."""
    if settings.max_connection_age_s <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
    ]


class GrpcServer:
    def __init__(self, settings: ServerSettings, services: Sequence[Service]) -> None:
        self.settings = settings
        self.services = list(services)
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.port = 0
        interceptors: list[Any] = []
        if settings.auth_tokens_file is not None:
            interceptors.append(BearerTokenInterceptor(TokenFile(settings.auth_tokens_file)))
        interceptors.append(ErrorInterceptor())
        limit = settings.max_message_mb * _MIB
        self._server = aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 0),
                *connection_age_options(settings),
            ],
        )

    @property
    def address(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> str:
        for service in self.services:
            service.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [s.name for s in self.services]
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server)
        await self.set_serving(False)
        # Liveness is not readiness: a model pod reloading (NOT_SERVING for minutes) or draining is alive. This
        # name answers SERVING for as long as the server answers at all; the liveness probe asks for it.
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        bind = (
            f"[{self.settings.host}]:{self.settings.port}"
            if ":" in self.settings.host
            else f"{self.settings.host}:{self.settings.port}"
        )
        if self.settings.tls.enabled:
            self.port = self._server.add_secure_port(bind, server_credentials(self.settings.tls))
        else:
            self.port = self._server.add_insecure_port(bind)
        if self.port == 0:
            raise ConfigError(f"could not bind {bind}")
        await self._server.start()
        return self.address

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *(s.name for s in self.services)]:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight calls finish within the grace period."""
        await self.set_serving(False)
        await self._server.stop(self.settings.drain_seconds if grace is None else grace)


def start_metrics(settings: ServerSettings) -> None:
    if settings.metrics_port is None:
        return
    from prometheus_client import start_http_server

    start_http_server(settings.metrics_port, addr=settings.host)
    log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)


async def serve(
    settings: ServerSettings,
    services: Sequence[Service],
    *,
    ready: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    announce: Callable[[str], None] | None = None,
    health: Callable[[Callable[[bool], Awaitable[None]]], None] | None = None,
) -> None:
    """Run a server until SIGTERM or SIGINT, then drain and return.

    `ready` does the slow start-up work (loading a model) while health says NOT_SERVING; `on_stop` releases
    what the core holds once the last in-flight call has finished. `health` is handed a function that sets the
    health status while serving (a model reload that empties the service); it does nothing once draining.
    """
    server = GrpcServer(settings, services)
    address = await server.start()
    (announce or _print_first_line)(f"listening on {address}")
    start_metrics(settings)

    stopping = asyncio.Event()
    if health is not None:

        async def report(serving: bool) -> None:
            if not stopping.is_set():
                await server.set_serving(serving)

        health(report)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    try:
        if ready is not None:
            readiness = asyncio.ensure_future(ready())
            stop_wait = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({readiness, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not readiness.done():
                readiness.cancel()
            elif readiness.exception() is not None:
                raise readiness.exception()  # type: ignore[misc]
        if not stopping.is_set():
            await server.set_serving(True)
            log.info("serving", extra={"address": address, "services": [s.name for s in services]})
            await stopping.wait()
        log.info("draining", extra={"grace_seconds": settings.drain_seconds})
    finally:
        await server.stop()
        if on_stop is not None:
            await on_stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("stopped")


def _print_first_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def remaining_seconds(context: aio.ServicerContext[Any, Any], default: float) -> float:
    """The time a handler may spend: the caller's deadline when it set one, else `default`."""
    left = context.time_remaining()
    return default if left is None else max(0.0, min(float(left), default))
