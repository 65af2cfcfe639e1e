"""Server interceptors: exceptions → status codes, bearer-token checks, request metrics.

Every handler of every service passes through `ErrorInterceptor`, so core code only raises the project's own
exceptions (services.common.errors) and never touches grpc status codes itself. That includes decoding the
request: grpc's aio server runs a handler's request deserializer before the handler, outside any servicer
context, and answers UNKNOWN whatever it raises; so the interceptor hands grpc no deserializer (the bytes pass
through as they are) and decodes them inside the handler, where an undecodable request is InvalidInput.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from prometheus_client import Counter, Histogram

from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    ThinkmeshError,
    Unauthenticated,
)
from services.common.security import TokenFile

log = logging.getLogger(__name__)

# Health checks come from the kubelet, which sends no token.
_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)

REQUESTS = Counter("thinkmesh_grpc_requests", "Finished RPCs", ["method", "code"])
LATENCY = Histogram(
    "thinkmesh_grpc_latency_seconds",
    "RPC latency",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# grpc's stubs type handlers loosely; Any keeps the wrapping code readable.
Handler = Any
Context = Any
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


# The status code each of our exceptions becomes (a subclass takes its nearest listed ancestor's); any other
# exception, and ThinkmeshError itself, is INTERNAL.
STATUS_OF: dict[type[ThinkmeshError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_of(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL


# gRFC A6's server pushback: a client whose retry policy covers the code waits this many ms before its retry.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def trailers_of(exc: ThinkmeshError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata for an error: the retry pushback of an Overloaded that says when to come back."""
    if isinstance(exc, Overloaded) and exc.retry_after_s is not None:
        return ((RETRY_PUSHBACK_KEY, str(max(0, round(exc.retry_after_s * 1000)))),)
    return ()


async def _abort_for(exc: BaseException, context: Context, method: str) -> None:
    if isinstance(exc, ThinkmeshError):
        await context.abort(status_of(exc), str(exc) or type(exc).__name__, trailing_metadata=trailers_of(exc))
    log.error("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


def _decoder(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any]:
    """The handler's request deserializer, raising InvalidInput for bytes that are not a valid request: a corrupt
    wire format, or a string field whose bytes are not UTF-8 (protobuf refuses those while parsing: DecodeError
    with upb, UnicodeDecodeError with the pure-Python parser)."""
    if deserializer is None:
        return lambda raw: raw
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = descriptor.full_name if descriptor is not None else f"request for {method}"

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"request is not a valid {name}: {exc}") from exc

    return decode


def _wrap(handler: Handler, method: str) -> Handler:
    """Re-build `handler` so it decodes its request, maps exceptions and records metrics."""
    decode = _decoder(handler.request_deserializer, method)

    def finish(started: float, code: grpc.StatusCode) -> None:
        LATENCY.labels(method).observe(time.perf_counter() - started)
        REQUESTS.labels(method, code.name).inc()

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(raw: bytes, context: Context) -> Any:
            started = time.perf_counter()
            try:
                response = await inner_uu(decode(raw), context)
            except aio.AbortError:
                finish(started, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            except Exception as exc:
                finish(started, status_of(exc))
                await _abort_for(exc, context, method)
            finish(started, grpc.StatusCode.OK)
            return response

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, handler.response_serializer)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for item in inner_us(decode(raw), context):
                    yield item
            except aio.AbortError:
                finish(started, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            except Exception as exc:
                finish(started, status_of(exc))
                await _abort_for(exc, context, method)
            finish(started, grpc.StatusCode.OK)

        return grpc.unary_stream_rpc_method_handler(unary_stream, None, handler.response_serializer)
    return handler  # client-streaming shapes: thinkmesh defines none


class ErrorInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        return _wrap(handler, details.method)


def _rejecting(handler: Handler, message: str) -> Handler:
    async def reject(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def reject_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            reject_stream, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(reject, handler.request_deserializer, handler.response_serializer)


class BearerTokenInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Admits a call only with `authorization: Bearer <token>` naming a token from the token file."""

    def __init__(self, tokens: TokenFile) -> None:
        self._tokens = tokens

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_PUBLIC_PREFIXES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        header = metadata.get("authorization", "")
        if isinstance(header, bytes):
            header = header.decode(errors="replace")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _rejecting(handler, "missing bearer token: send 'authorization: Bearer <token>'")
        if not self._tokens.accepts(token.strip()):
            return _rejecting(handler, "invalid bearer token")
        return handler
