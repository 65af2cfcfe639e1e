"""Timing a batch of calls for the benchmarks: all at once (what request merging sees) or one at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def timed(calls: list[Callable[[], Awaitable[Any]]], concurrent: bool) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    if concurrent:
        results = list(await asyncio.gather(*(call() for call in calls)))
    else:
        results = [await call() for call in calls]
    return time.perf_counter() - started, results
