"""Merging concurrent requests into one batch for a model, and dropping the work no caller waits for any more.

Requests that arrive within `window_s` of the first are run together by `run_batch` in one worker thread
(torch releases the GIL in its kernels, so the event loop keeps serving). Requests are grouped by `key`: only
requests with the same key (e.g. the same sampling parameters) share a batch. A failing batch fails only its
own requests.

A caller stops waiting when its deadline passes or when it goes away (grpc.aio cancels the handler's task). The
one thread runs every caller's batches in turn, so work nobody waits for must stop, or it holds up every call
queued behind it. Each request may carry a `Liveness`, read through the `liveness` function: the call's absolute
deadline and a cancelled flag, which `submit` sets when its caller's task is cancelled (by the client, or by
`within_deadline` when the deadline passes). A request that is already dead when its batch is about to run is
not run; `run_batch` reads `alive()` between decoding steps or micro-batches, drops that request's rows and
stops when none are left; a request that died while its batch ran gets DeadlineExceeded (or stays cancelled),
never the partial result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common.deadlines import Liveness
from services.common.errors import DeadlineExceeded

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass
class _Pending(Generic[Req, Res]):
    request: Req
    future: asyncio.Future[Res]
    liveness: Liveness | None

    def wanted(self) -> bool:
        """Whether to run (or answer) the request; a dead one's caller is told so, if it still listens."""
        if self.future.done():
            return False
        if self.liveness is None or self.liveness.alive():
            return True
        if self.liveness.cancelled:
            self.future.cancel()
        else:
            self.future.set_exception(DeadlineExceeded("the caller's deadline passed before its request was done"))
        return False


class MicroBatcher(Generic[Req, Res]):
    def __init__(
        self,
        run_batch: Callable[[list[Req]], list[Res]],
        *,
        size: Callable[[Req], int],
        key: Callable[[Req], Hashable] = lambda _: None,
        liveness: Callable[[Req], Liveness | None] = lambda _: None,
        window_s: float = 0.005,
        max_batch: int = 64,
        name: str = "batch",
    ) -> None:
        self._run_batch = run_batch
        self._size = size
        self._key = key
        self._liveness = liveness
        self._window_s = window_s
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending[Req, Res]] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.batches_run = 0
        self.requests_run = 0

    async def submit(self, request: Req) -> Res:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._loop_task = asyncio.create_task(self._collect_and_run())
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        liveness = self._liveness(request)
        await self._queue.put(_Pending(request, future, liveness))
        try:
            return await future
        except asyncio.CancelledError:
            # The caller is gone (or its deadline passed): the batch's thread drops the request at its next check.
            if liveness is not None:
                liveness.cancel()
            raise

    async def _collect_and_run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            window_ends = loop.time() + self._window_s
            while sum(self._size(p.request) for p in batch) < self._max_batch:
                timeout = window_ends - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            groups: dict[Hashable, list[_Pending[Req, Res]]] = {}
            for pending in batch:
                if pending.wanted():
                    groups.setdefault(self._key(pending.request), []).append(pending)
            for group in groups.values():
                await self._run_group(loop, group)

    async def _run_group(self, loop: asyncio.AbstractEventLoop, group: list[_Pending[Req, Res]]) -> None:
        # Groups run one after another: a request may have died while the ones before it ran.
        group = [pending for pending in group if pending.wanted()]
        if not group:
            return
        try:
            results = await loop.run_in_executor(self._thread, self._run_batch, [p.request for p in group])
        except Exception as exc:
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.batches_run += 1
        self.requests_run += len(group)
        for pending, result in zip(group, results, strict=True):
            if pending.wanted():  # a request that died during the run was cut short: its result is partial
                pending.future.set_result(result)

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown, True)
