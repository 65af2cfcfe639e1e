"""The project's own exceptions. Core code raises them; one interceptor maps them to gRPC status codes.

Responses never carry error payloads: a failure is an exception with a message a caller can act on.
"""

from __future__ import annotations

import grpc


class ThinkmeshError(Exception):
    """Base class: every subclass names the gRPC status code it becomes."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(ThinkmeshError):
    """The request is malformed or asks for more than the server allows."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Overloaded(ThinkmeshError):
    """A bounded queue is full; the caller should back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(ThinkmeshError):
    """The service cannot answer yet (model loading) or any more (draining)."""

    code = grpc.StatusCode.UNAVAILABLE


class NotFound(ThinkmeshError):
    """A named thing (model version, round) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(ThinkmeshError):
    """A missing or wrong bearer token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class DeadlineExceeded(ThinkmeshError):
    """The work could not finish within the caller's deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ConfigError(ValueError):
    """A setting is missing or malformed; raised at start-up, naming the variable."""


class FailedPrecondition(ThinkmeshError):
    """The system is not in a state that allows the call (e.g. a round is already running)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
