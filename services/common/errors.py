"""The project's own exceptions. Core code raises them; one interceptor (services.common.interceptors) maps
them to gRPC status codes, so the domain knows nothing of gRPC.

Responses never carry error payloads: a failure is an exception with a message a caller can act on.
"""

from __future__ import annotations


class ThinkmeshError(Exception):
    """Base class: a failure of ours (an INTERNAL status unless a subclass says what went wrong)."""


class InvalidInput(ThinkmeshError):
    """The request is malformed or asks for more than the server allows."""


class Overloaded(ThinkmeshError):
    """A bounded queue is full; the caller should back off and retry, after `retry_after_s` when it is set (the
    interceptor sends it as gRPC's server pushback, which a client's retry policy honours)."""

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ThinkmeshError):
    """The service cannot answer yet (model loading) or any more (draining)."""


class NotFound(ThinkmeshError):
    """A named thing (model version, round) does not exist."""


class Unauthenticated(ThinkmeshError):
    """A missing or wrong bearer token."""


class DeadlineExceeded(ThinkmeshError):
    """The work could not finish within the caller's deadline."""


class ConfigError(ValueError):
    """A setting is missing or malformed; raised at start-up, naming the variable."""


class FailedPrecondition(ThinkmeshError):
    """The system is not in a state that allows the call (e.g. a round is already running)."""
