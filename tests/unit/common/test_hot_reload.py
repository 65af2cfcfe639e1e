"""Following the store's current version: swap, replace, inplace and off, with engines that count how many are
alive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.common.errors import NotReady
from services.common.hot_reload import ModelSource, ReloadMode, Slot, resolve_reload

INTERVAL_S = 0.01


class Engine:
    """A loaded model: alive from its load until it is closed."""

    def __init__(self, version: str, fleet: Fleet) -> None:
        self._version = version
        self.fleet = fleet
        self.closed = False

    @property
    def version(self) -> str:
        return self._version

    async def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True
        self.fleet.alive -= 1


class Fleet:
    """The loader, the store's pointer and the health status as a service sees them."""

    def __init__(self, current: str | None = "v1", *, broken: tuple[str, ...] = ()) -> None:
        self.current = current
        self.broken = set(broken)
        # inplace: versions that cannot go into a live engine, and versions whose in-place load fails half-way.
        self.not_in_place: set[str] = set()
        self.broken_in_place: set[str] = set()
        self.in_place: list[tuple[str, str]] = []  # (the engine's version before, the version loaded into it)
        self.loads: list[str] = []
        self.alive = 0
        self.most_alive = 0
        self.health: list[bool] = []

    async def load(self, name: str) -> Engine:
        self.loads.append(name)
        await asyncio.sleep(0)  # a load takes a while: the event loop runs other calls meanwhile
        if name in self.broken:
            raise RuntimeError(f"{name}: CUDA out of memory")
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        return Engine(name, self)

    async def reload_in_place(self, engine: Engine, name: str) -> bool:
        if name in self.not_in_place:
            return False
        self.in_place.append((engine.version, name))
        await asyncio.sleep(0)  # loading takes a while
        if name in self.broken_in_place:
            raise RuntimeError(f"{name}: a shard did not load")
        engine._version = name
        return True

    async def report(self, serving: bool) -> None:
        self.health.append(serving)

    def source(self, slot: Slot[Engine], reload: ReloadMode, pinned: str = "") -> ModelSource[Engine]:
        source = ModelSource(
            slot,
            "policy",
            lambda: self.current,
            self.load,
            pinned=pinned,
            interval_s=INTERVAL_S,
            reload=reload,
            reload_in_place=self.reload_in_place,
        )
        source.report_serving_to(self.report)
        return source


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(INTERVAL_S / 2)


async def hold_a_call(slot: Slot[Engine], release: asyncio.Event) -> str:
    """A call in flight on the engine it leased until `release` is set."""
    async with slot.lease() as engine:
        await release.wait()
        return engine.version


async def polls(count: int = 10) -> None:
    """Long enough for the follower to have looked at the pointer `count` times."""
    await asyncio.sleep(INTERVAL_S * count)


async def test_swap_loads_beside_the_live_engine_then_closes_it_after_its_calls() -> None:
    fleet, slot = Fleet(), Slot[Engine]("policy")
    source = fleet.source(slot, "swap")
    await source.start()
    release = asyncio.Event()
    in_flight = asyncio.create_task(hold_a_call(slot, release))
    await asyncio.sleep(0)

    fleet.current = "v2"
    await until(lambda: slot.version == "v2")
    # Both are alive: v1 finishes its call while new calls already go to v2.
    assert fleet.alive == 2
    async with slot.lease() as engine:
        assert engine.version == "v2"
    release.set()
    assert await in_flight == "v1"
    await until(lambda: fleet.alive == 1)
    assert fleet.most_alive == 2
    assert fleet.health == []  # the server never stops serving
    await source.stop()
    assert fleet.alive == 0


async def test_replace_closes_the_live_engine_before_loading_the_next() -> None:
    fleet, slot = Fleet(), Slot[Engine]("policy")
    source = fleet.source(slot, "replace")
    await source.start()
    release = asyncio.Event()
    in_flight = asyncio.create_task(hold_a_call(slot, release))
    await asyncio.sleep(0)

    fleet.current = "v2"
    await until(lambda: fleet.health == [False])
    # Not serving: new calls are refused (UNAVAILABLE) while v1 finishes its call, and v2 waits for its memory.
    with pytest.raises(NotReady, match="loading version v2"):
        async with slot.lease():
            pass
    await polls()
    assert fleet.loads == ["v1"]
    release.set()
    assert await in_flight == "v1"
    await until(lambda: slot.version == "v2")
    assert fleet.health == [False, True]
    assert fleet.most_alive == 1
    await source.stop()
    assert fleet.alive == 0


async def test_a_failed_replace_loads_the_previous_version_back_and_skips_the_broken_one() -> None:
    fleet, slot = Fleet(broken=("v2",)), Slot[Engine]("policy")
    source = fleet.source(slot, "replace")
    await source.start()

    fleet.current = "v2"
    await until(lambda: fleet.health == [False, True])
    assert slot.version == "v1"
    assert fleet.loads == ["v1", "v2", "v1"]
    await polls()
    assert fleet.loads == ["v1", "v2", "v1"]  # v2 is not tried again (and v1 not released again) …

    fleet.current = "v3"  # … but a newer version is
    await until(lambda: slot.version == "v3")
    assert fleet.health == [False, True, False, True]
    assert fleet.most_alive == 1
    await source.stop()
    assert fleet.alive == 0


async def test_when_the_previous_version_fails_to_load_back_the_service_stays_not_serving() -> None:
    fleet, slot = Fleet(), Slot[Engine]("policy")
    source = fleet.source(slot, "replace")
    await source.start()

    fleet.broken = {"v1", "v2"}  # e.g. the GPU is gone
    fleet.current = "v2"
    await until(lambda: fleet.loads == ["v1", "v2", "v1"])
    await polls()
    assert fleet.health == [False]
    assert slot.version is None
    with pytest.raises(NotReady):
        async with slot.lease():
            pass
    assert fleet.loads == ["v1", "v2", "v1"]

    fleet.broken = set()
    fleet.current = "v3"  # a new version still gets its chance
    await until(lambda: slot.version == "v3")
    assert fleet.health == [False, True]
    await source.stop()
    assert fleet.alive == 0


async def test_a_failed_swap_keeps_the_live_engine_serving() -> None:
    fleet, slot = Fleet(broken=("v2",)), Slot[Engine]("policy")
    source = fleet.source(slot, "swap")
    await source.start()
    fleet.current = "v2"
    await until(lambda: "v2" in fleet.loads)
    await polls()
    assert slot.version == "v1"
    assert fleet.loads == ["v1", "v2"]
    assert fleet.health == []
    await source.stop()


async def test_inplace_holds_new_calls_until_the_new_weights_are_in_the_live_engine() -> None:
    fleet, slot = Fleet(), Slot[Engine]("policy")
    source = fleet.source(slot, "inplace")
    await source.start()
    release = asyncio.Event()
    in_flight = asyncio.create_task(hold_a_call(slot, release))
    await asyncio.sleep(0)

    fleet.current = "v2"
    await polls()
    # The reload waits for the call in flight, and a new call waits for the reload: held, not refused.
    assert fleet.in_place == []
    held_release = asyncio.Event()
    held = asyncio.create_task(hold_a_call(slot, held_release))
    await polls()
    assert not held.done()
    release.set()
    assert await in_flight == "v1"
    await until(lambda: slot.version == "v2")
    held_release.set()
    assert await held == "v2"
    assert fleet.in_place == [("v1", "v2")]
    # One engine throughout, never a second load, never out of service.
    assert (fleet.loads, fleet.most_alive, fleet.health) == (["v1"], 1, [])
    await source.stop()
    assert fleet.alive == 0


async def test_a_version_that_cannot_go_in_place_is_replaced() -> None:
    fleet, slot = Fleet(), Slot[Engine]("policy")
    fleet.not_in_place = {"v2"}  # e.g. another tokenizer
    source = fleet.source(slot, "inplace")
    await source.start()
    fleet.current = "v2"
    await until(lambda: slot.version == "v2")
    assert (fleet.loads, fleet.in_place, fleet.health, fleet.most_alive) == (["v1", "v2"], [], [False, True], 1)
    await source.stop()


async def test_a_failed_in_place_load_releases_the_engine_and_replaces_it() -> None:
    fleet, slot = Fleet(), Slot[Engine]("policy")
    fleet.broken_in_place = {"v2"}
    source = fleet.source(slot, "inplace")
    await source.start()
    release = asyncio.Event()
    in_flight = asyncio.create_task(hold_a_call(slot, release))
    await asyncio.sleep(0)
    fleet.current = "v2"
    await polls()
    held = asyncio.create_task(hold_a_call(slot, asyncio.Event()))
    release.set()
    await in_flight
    # The half-loaded engine never answers: the held call is told to go elsewhere, a whole engine is loaded.
    with pytest.raises(NotReady, match="loading version v2"):
        await held
    await until(lambda: slot.version == "v2")
    assert fleet.loads == ["v1", "v2"]
    assert fleet.health == [False, True]
    assert fleet.most_alive == 1
    await source.stop()
    assert fleet.alive == 0


@pytest.mark.parametrize("reload", ["off", "swap", "replace", "inplace"])
async def test_off_and_pinned_never_reload(reload: ReloadMode) -> None:
    fleet, slot = Fleet(), Slot[Engine]("policy")
    pinned = "" if reload == "off" else "/models/downloaded"
    source = fleet.source(slot, reload, pinned=pinned)
    await source.start()
    fleet.current = "v2"
    await polls()
    assert slot.version == ("v1" if reload == "off" else "/models/downloaded")
    assert len(fleet.loads) == 1
    assert fleet.health == []
    await source.stop()
    assert fleet.alive == 0


async def test_off_still_waits_for_a_first_version() -> None:
    fleet, slot = Fleet(current=None), Slot[Engine]("policy")
    source = fleet.source(slot, "off")
    starting = asyncio.create_task(source.start())
    await polls(3)
    assert not starting.done()
    fleet.current = "v4"
    await starting
    assert slot.version == "v4"
    await source.stop()


async def test_an_engine_that_fails_to_close_does_not_stop_the_next_version() -> None:
    fleet, slot = Fleet(), Slot[Engine]("policy")
    await slot.install(await fleet.load("v1"))

    async def broken_close() -> None:
        raise RuntimeError("driver error")

    slot_engine = slot.version
    async with slot.lease() as engine:
        engine.close = broken_close  # type: ignore[method-assign]
    await slot.install(await fleet.load("v2"))
    assert (slot_engine, slot.version) == ("v1", "v2")
    await slot.close()


def test_auto_is_the_backends_choice_and_an_explicit_mode_is_kept() -> None:
    assert resolve_reload("auto", auto="inplace") == "inplace"
    assert resolve_reload("auto", auto="swap") == "swap"
    for mode in ("swap", "replace", "inplace", "off"):
        assert resolve_reload(mode, auto="inplace") == mode
