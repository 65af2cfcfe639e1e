"""A call's deadline and cancellation, as the work it started sees them (the model services' batches, their
engines): `within_deadline` runs a call's work under its deadline, `Liveness` tells a batch's thread whether the
caller still waits, `call_deadline` gives an engine the deadline of the call it serves."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

from services.common.errors import DeadlineExceeded

T = TypeVar("T")

# The absolute deadline (time.monotonic()) of the call being served, set by `within_deadline`. Engines read it
# through `Liveness.of_current_call()` or `call_deadline()`; asyncio.to_thread copies it into its thread.
_CALL_DEADLINE: ContextVar[float | None] = ContextVar("thinkmesh_call_deadline", default=None)


def call_deadline() -> float | None:
    """The absolute deadline (time.monotonic()) of the call being served, or None when it has none."""
    return _CALL_DEADLINE.get()


@asynccontextmanager
async def within_deadline(seconds: float | None, what: str) -> AsyncIterator[None]:
    """Runs the body under the caller's deadline, `seconds` from now (None: no deadline). A call with no time left
    is not started; past the deadline the body is cancelled — which drops the call's rows from its batch and
    aborts a vLLM request — and DeadlineExceeded is raised, naming `what`."""
    if seconds is None:
        yield
        return
    if seconds <= 0:
        raise DeadlineExceeded(f"{what}: the caller's deadline had passed before the work could start")
    token = _CALL_DEADLINE.set(time.monotonic() + seconds)
    try:
        async with asyncio.timeout(seconds) as timer:
            yield
    except TimeoutError as exc:
        if timer.expired():
            raise DeadlineExceeded(f"{what} did not finish within the caller's deadline of {seconds:.3g}s") from exc
        raise
    finally:
        _CALL_DEADLINE.reset(token)


@dataclass(eq=False)
class Liveness:
    """Whether the caller of a request still waits for its answer. Safe to read from the batch's thread."""

    deadline: float | None = None  # time.monotonic(); None: no deadline
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def of_current_call(cls) -> Liveness:
        return cls(call_deadline())

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def alive(self) -> bool:
        return not self.cancelled and not self.expired()


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, in order, or the first error; then the others are cancelled rather than left running (gather()
    cancels them when it is cancelled itself, not when one of them fails), so no work goes on that nobody reads."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
