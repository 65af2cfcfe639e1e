"""Serving a model while new versions come and go.

`Slot` holds the engine that answers new requests. `install(new)` swaps it in; requests already running finish
on the engine they leased (each response names the version that answered), and the old engine is closed after
the last of them. `follow_store` polls the store's current pointer and installs each new version it names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Generic, Protocol, TypeVar

from services.common.errors import NotReady

log = logging.getLogger(__name__)


class Versioned(Protocol):
    @property
    def version(self) -> str: ...

    async def close(self) -> None: ...


E = TypeVar("E", bound=Versioned)


class _Holder(Generic[E]):
    def __init__(self, engine: E) -> None:
        self.engine = engine
        self.active = 0
        self.idle = asyncio.Event()
        self.idle.set()


class Slot(Generic[E]):
    def __init__(self, what: str) -> None:
        self._what = what
        self._holder: _Holder[E] | None = None

    @property
    def version(self) -> str | None:
        return self._holder.engine.version if self._holder else None

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[E]:
        holder = self._holder
        if holder is None:
            raise NotReady(f"no {self._what} model is loaded yet")
        holder.active += 1
        holder.idle.clear()
        try:
            yield holder.engine
        finally:
            holder.active -= 1
            if holder.active == 0:
                holder.idle.set()

    async def install(self, engine: E) -> None:
        previous, self._holder = self._holder, _Holder(engine)
        log.info("%s version %s serving", self._what, engine.version)
        if previous is not None:
            await previous.idle.wait()
            await previous.engine.close()

    async def close(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            await holder.idle.wait()
            await holder.engine.close()


async def follow_store(
    slot: Slot[E],
    current_name: Callable[[], str | None],
    load: Callable[[str], Awaitable[E]],
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Install every new version the pointer names; a version that fails to load leaves the old one serving."""
    failed: str | None = None
    while not stop.is_set():
        name = current_name()
        if name is not None and name not in (slot.version, failed):
            try:
                engine = await load(name)
            except Exception:
                log.exception("loading version %s failed; %s keeps serving", name, slot.version)
                failed = name
            else:
                await slot.install(engine)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


class ModelSource(Generic[E]):
    """Where a service's model comes from: a pinned version or path, or the store's current version, followed."""

    def __init__(
        self,
        slot: Slot[E],
        kind: str,
        current_name: Callable[[], str | None],
        load: Callable[[str], Awaitable[E]],
        *,
        pinned: str = "",
        interval_s: float = 5.0,
    ) -> None:
        self._slot = slot
        self._kind = kind
        self._current_name = current_name
        self._load = load
        self._pinned = pinned
        self._interval_s = interval_s
        self._stop = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the first model (the service's `ready`); then follow the store unless pinned.

        An empty store is not an error: the service stays NOT_SERVING (calls get UNAVAILABLE) until a version
        is published, so pods may start before `thinkmesh bootstrap` or `models import` has run.
        """
        if self._pinned:
            await self._slot.install(await self._load(self._pinned))
            return
        name = self._current_name()
        if name is None:
            log.warning(
                "the store has no current %s yet: waiting (run `thinkmesh bootstrap` or "
                "`thinkmesh models import PATH --kind %s`)",
                self._kind,
                self._kind,
            )
        while name is None and not self._stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval_s)
            name = self._current_name()
        if name is None:
            return
        await self._slot.install(await self._load(name))
        self._follower = asyncio.create_task(
            follow_store(self._slot, self._current_name, self._load, self._interval_s, self._stop)
        )

    async def stop(self) -> None:
        self._stop.set()
        if self._follower is not None:
            await self._follower
        await self._slot.close()
