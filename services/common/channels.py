"""Client channels to thinkmesh services.

`dns:///name:port` targets resolve to every address of a headless Service and calls are balanced
round-robin over them, which is how search workers spread load over all sandbox pods.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from grpc import aio

from services.common.security import TlsFiles, channel_credentials

_MIB = 1024 * 1024

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        # Retry transient UNAVAILABLE (a pod going away mid-rollout) a few times, with backoff.
        "methodConfig": [
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
        ],
    }
)


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
) -> aio.Channel:
    """An asyncio channel; TLS when `tls` names a CA or certificate, a bearer token on every call when given."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_mb * _MIB),
        ("grpc.max_receive_message_length", max_message_mb * _MIB),
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    interceptors: Any = [_TokenInterceptor(token)] if token else None
    if tls is not None and (tls.ca is not None or tls.cert is not None):
        return aio.secure_channel(target, channel_credentials(tls), options=options, interceptors=interceptors)
    return aio.insecure_channel(target, options=options, interceptors=interceptors)
