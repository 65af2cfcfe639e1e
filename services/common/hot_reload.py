"""Serving a model while new versions come and go.

`Slot` holds the engine that answers new requests; each response names the version that answered. `ModelSource`
loads the first model and then follows the store's current pointer in one of three ways (`Reload`):

- `swap`: the new engine is loaded beside the live one and swapped in. Requests already running finish on the
  engine they leased, and the old engine is closed after the last of them: no gap, but two models in memory.
- `replace`: the live engine is released first — new calls get NotReady (UNAVAILABLE: callers retry another
  replica), the callback given to `report_serving_to` hears "not serving" (meant for the server's health status,
  so that a readiness probe takes the pod out), in-flight calls finish and the engine is closed, freeing its
  memory — and then the new one is loaded. For an engine that reserves most of a GPU (vLLM), where two never
  fit. If the new version fails to load, the previous one is loaded back; if that fails too, nothing serves
  until a newer version loads.
- `inplace`: the new weights are loaded into the live engine (vLLM's in-place weight reload): new calls wait
  (they are held, not refused), in-flight calls finish, the weights and the caches derived from them are
  replaced, the held calls go on. No second engine, no gap in readiness, no dropped call. Where a version cannot
  go in place (another architecture or tokenizer; an engine without it), it is loaded as `replace` does; if the
  in-place load fails half-way, the engine is released and the version loaded as `replace` does (the previous
  one back if it fails too).
- `off`: the version current at start is served until the process restarts (a Kubernetes rollout of the
  Deployment replaces the pods, and each new pod loads the current version at start).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Generic, Literal, Protocol, TypeVar, get_args

from services.common.errors import NotReady

log = logging.getLogger(__name__)

# A service's reload setting; `auto` is the service's choice for its backend (see `resolve_reload`).
Reload = Literal["auto", "swap", "replace", "inplace", "off"]
RELOADS: tuple[str, ...] = get_args(Reload)
ReloadMode = Literal["swap", "replace", "inplace", "off"]


def resolve_reload(reload: Reload, *, auto: ReloadMode) -> ReloadMode:
    """`auto` → the backend's choice (`auto`): `inplace` for an engine that reserves most of a GPU and can take
    new weights, `swap` where two models fit."""
    return auto if reload == "auto" else reload


class Versioned(Protocol):
    @property
    def version(self) -> str: ...

    async def close(self) -> None: ...


E = TypeVar("E", bound=Versioned)

# `reload_in_place(engine, name)`: load version `name`'s weights into `engine`, which no call is using; False when
# `name` cannot go in place (nothing was touched), an exception when loading failed (the engine's weights are then
# unknown).
InPlace = Callable[[E, str], Awaitable[bool]]


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
        # Set while the slot is held (`hold`): new calls wait for it.
        self._gate: asyncio.Event | None = None
        # What a call is told while the slot is empty.
        self._empty = f"no {what} model is loaded yet"

    @property
    def version(self) -> str | None:
        return self._holder.engine.version if self._holder else None

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[E]:
        while self._gate is not None:  # held: wait (the caller's deadline bounds the wait)
            await self._gate.wait()
        holder = self._holder
        if holder is None:
            raise NotReady(self._empty)
        holder.active += 1
        holder.idle.clear()
        try:
            yield holder.engine
        finally:
            holder.active -= 1
            if holder.active == 0:
                holder.idle.set()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[E | None]:
        """Hold new calls (they wait, they are not refused) and wait for the in-flight ones to finish; yields the
        engine (None: the slot is empty) for exclusive use, and lets the held calls in when the block ends."""
        assert self._gate is None, "the slot is held already"
        gate = self._gate = asyncio.Event()
        try:
            holder = self._holder
            if holder is not None:
                await holder.idle.wait()
            yield holder.engine if holder is not None else None
        finally:
            self._gate = None
            gate.set()

    async def install(self, engine: E) -> None:
        """Serve `engine` from now on; the previous one is closed once its in-flight calls have finished."""
        previous, self._holder = self._holder, _Holder(engine)
        log.info("%s version %s serving", self._what, engine.version)
        if previous is not None:
            await self._retire(previous)

    async def release(self, reason: str) -> None:
        """Empty the slot: new calls get NotReady(`reason`); returns once the engine's in-flight calls have
        finished and it is closed."""
        holder, self._holder = self._holder, None
        self._empty = reason
        if holder is not None:
            await self._retire(holder)

    async def close(self) -> None:
        await self.release(f"the {self._what} service is stopping")

    async def _retire(self, holder: _Holder[E]) -> None:
        await holder.idle.wait()
        try:
            await holder.engine.close()
        except Exception:
            # The slot has moved on either way; a close that fails must not stop the next version.
            log.exception("closing %s version %s failed", self._what, holder.engine.version)


class ModelSource(Generic[E]):
    """Where a service's model comes from: a pinned version or path, or the store's current version, followed
    as `reload` says (see the module doc)."""

    def __init__(
        self,
        slot: Slot[E],
        kind: str,
        current_name: Callable[[], str | None],
        load: Callable[[str], Awaitable[E]],
        *,
        pinned: str = "",
        interval_s: float = 5.0,
        reload: ReloadMode = "swap",
        reload_in_place: InPlace[E] | None = None,
    ) -> None:
        self._slot = slot
        self._kind = kind
        self._current_name = current_name
        self._load = load
        self._pinned = pinned
        self._interval_s = interval_s
        self._reload = reload
        self._reload_in_place = reload_in_place
        self._stop = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        # The name (store version or path) the slot's engine was loaded from; None while the slot is empty.
        self._serving: str | None = None
        self._report: Callable[[bool], Awaitable[None]] | None = None

    def report_serving_to(self, report: Callable[[bool], Awaitable[None]]) -> None:
        """`report(False)` when a `replace` reload empties the slot, `report(True)` once a model serves again: for
        the server's health status, so that a readiness probe takes the pod out meanwhile. Whether the first model
        is loaded is the server's own business (NOT_SERVING until `start` returns)."""
        self._report = report

    async def start(self) -> None:
        """Load the first model (the service's `ready`); then follow the store, unless pinned or `off`.

        An empty store is not an error: the service stays NOT_SERVING (calls get UNAVAILABLE) until a version
        is published, so pods may start before `thinkmesh bootstrap` or `models import` has run.
        """
        if self._pinned:
            await self._swap(self._pinned)
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
        await self._swap(name)
        if self._reload == "off":
            log.info("%s reload is off: %s serves until the process restarts", self._kind, name)
            return
        log.info("%s follows the store's current version (reload: %s)", self._kind, self._reload)
        self._follower = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        self._stop.set()
        if self._follower is not None:
            await self._follower
        await self._slot.close()

    async def _follow(self) -> None:
        """Switch to every new version the pointer names; a version that fails to load is not tried again."""
        failed: str | None = None
        while not self._stop.is_set():
            name = self._current_name()
            if name is not None and name not in (self._serving, failed):
                follow = {"replace": self._replace, "inplace": self._in_place}.get(self._reload, self._swap)
                try:
                    await follow(name)
                except Exception:
                    log.exception(
                        "loading %s version %s failed; %s",
                        self._kind,
                        name,
                        f"{self._serving} serves" if self._serving else "nothing serves until a new version loads",
                    )
                    failed = name
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval_s)

    async def _swap(self, name: str) -> None:
        """Load beside the live engine, then swap; a load that fails leaves the live one serving."""
        engine = await self._load(name)
        await self._slot.install(engine)
        self._serving = name

    async def _in_place(self, name: str) -> None:
        """Load `name`'s weights into the live engine while new calls wait; `replace` where that cannot be done."""
        broken = False
        async with self._slot.hold() as engine:
            if engine is None or self._reload_in_place is None:
                done = False
            else:
                log.info("%s: loading %s into the engine serving %s (reload: inplace)", self._kind, name, self._serving)
                try:
                    done = await self._reload_in_place(engine, name)
                except Exception:
                    log.exception("%s: loading %s in place failed; releasing the engine", self._kind, name)
                    done, broken = False, True
                    # Its weights may be half of each version: nothing may run on it, not even the held calls
                    # (they get NotReady; `replace` below reports "not serving" and loads a whole engine).
                    await self._slot.release(f"the {self._kind} is loading version {name}; another replica can answer")
            if done:
                self._serving = name
                log.info("%s version %s serving (loaded in place)", self._kind, name)
                return
        if not broken:
            log.info("%s: %s cannot be loaded in place; replacing the engine", self._kind, name)
        await self._replace(name)

    async def _replace(self, name: str) -> None:
        """Release the live engine, then load `name`; if that fails, load the previous version back."""
        previous = self._serving
        if previous is not None:  # else nothing serves already (a version that did not load back)
            await self._tell(False)
            log.info("%s: releasing %s before loading %s (reload: replace)", self._kind, previous, name)
            self._serving = None
        await self._slot.release(f"the {self._kind} is loading version {name}; another replica can answer")
        try:
            engine = await self._load(name)
        except Exception:
            if previous is not None:
                log.warning("%s version %s did not load; loading %s back", self._kind, name, previous)
                try:
                    await self._slot.install(await self._load(previous))
                except Exception:
                    log.exception("loading %s version %s back failed too: not serving", self._kind, previous)
                else:
                    self._serving = previous
                    await self._tell(True)
            raise
        await self._slot.install(engine)
        self._serving = name
        await self._tell(True)

    async def _tell(self, serving: bool) -> None:
        if self._report is not None:
            await self._report(serving)
