"""Client channels to thinkmesh services.

`dns:///name:port` targets resolve to every address of a headless Service and calls are balanced
round-robin over them, which is how search workers spread load over all sandbox pods.

A channel opened with an `affinity_header` balances by consistent hashing instead (gRPC core's
`ring_hash_experimental`): every call carrying the same value of that header goes to the same address of those
the resolver reports, and when that address goes, the ring's next one takes its calls (and only its calls). Search
workers send every policy call of one tree under one key, so the replica's prefix cache keeps the tree's prefix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from grpc import aio

from services.common.security import TlsFiles, channel_credentials

_MIB = 1024 * 1024

# The metadata key a caller sets on each call of an affinity channel: calls with one value share one server.
AFFINITY_HEADER = "x-thinkmesh-affinity"

# Retry transient UNAVAILABLE (a pod going away mid-rollout) a few times, with backoff. Under ring hashing a retry
# is picked again, so a call whose server just went lands on the ring's next server.
_METHOD_CONFIG = [
    {
        "name": [{}],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }
]
# gRPC core reads the hash key from `requestHashHeader` only when this is true, and reads it once per process, when
# the first ring_hash channel is built (grpcio 1.85); without it every call fails INTERNAL "hash attribute not
# present". Set to "true" outright where affinity is asked for: a "false" inherited from the environment must not
# turn every policy call into an error.
_RING_HASH_HEADER_FLAG = "GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY"


def service_config(affinity_header: str | None = None) -> str:
    """The channel's service config: round-robin over every address, or consistent hashing on `affinity_header`."""
    balancing: dict[str, Any] = {"round_robin": {}}
    if affinity_header:
        # gRPC's default ring (1,024 entries or more) splits the keys about evenly over a few replicas.
        balancing = {"ring_hash_experimental": {"requestHashHeader": affinity_header}}
    return json.dumps({"loadBalancingConfig": [balancing], "methodConfig": _METHOD_CONFIG})


class _TokenInterceptor(aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._header)
        return aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


def open_channel(
    target: str,
    *,
    tls: TlsFiles | None = None,
    token: str | None = None,
    max_message_mb: int = 64,
    affinity_header: str | None = None,
) -> aio.Channel:
    """An asyncio channel; TLS when `tls` names a CA or certificate, a bearer token on every call when given.

    `affinity_header`: balance by consistent hashing on that metadata key's value (calls without it fail INTERNAL,
    so every call on such a channel must carry one) instead of round-robin."""
    if affinity_header:
        os.environ[_RING_HASH_HEADER_FLAG] = "true"
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_mb * _MIB),
        ("grpc.max_receive_message_length", max_message_mb * _MIB),
        ("grpc.service_config", service_config(affinity_header)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    interceptors: Any = [_TokenInterceptor(token)] if token else None
    if tls is not None and (tls.ca is not None or tls.cert is not None):
        return aio.secure_channel(target, channel_credentials(tls), options=options, interceptors=interceptors)
    return aio.insecure_channel(target, options=options, interceptors=interceptors)
