"""One vLLM request to its end, from the async engine's output stream (generate or encode): its last output.

vLLM aborts a request whose stream is cancelled or closed (`aclosing` closes it at once, not at garbage
collection); the explicit abort here covers the versions and paths where it does not, so a caller that went away or
ran out of time frees the request's place in the scheduler (its KV-cache blocks) at once. Aborting a finished or
unknown id does nothing. Shared by the policy's and the PPM's vLLM backends (no vLLM import here).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any


async def last_output(
    outputs: AsyncGenerator[Any, None], abort: Callable[[str], Awaitable[Any]], request_id: str
) -> Any:
    """The stream's last output; on cancellation or failure the request is aborted and the error raised."""
    final = None
    try:
        async with contextlib.aclosing(outputs) as stream:
            async for output in stream:
                final = output
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(abort(request_id))
        raise
    if final is None:
        raise RuntimeError(f"vLLM finished request {request_id} without an output")
    return final
