"""Worker heartbeats (services/search/heartbeats.py): the stores against a real SQLite file and a real
redis-server, the worker's rate-limited writer, and the SearchService's watch, driven by hand-moved clocks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import text

from services.search.celery_app import make_celery
from services.search.heartbeats import (
    BeatWriter,
    RedisHeartbeats,
    SqlHeartbeats,
    WorkerWatch,
    heartbeats_for,
    interval_s,
)
from services.search.settings import CelerySettings
from support.redis_server import redis_server


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MemoryHeartbeats:
    """A real, small store: the newest beat per hostname in a dict."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.beats: dict[str, float] = {}
        self.failing = False

    def beat(self, hostname: str) -> None:
        if self.failing:
            raise ConnectionError("backend down")
        self.beats[hostname] = self.clock()

    def latest(self) -> float | None:
        if self.failing:
            raise ConnectionError("backend down")
        return max(self.beats.values(), default=None)


def test_interval_fits_several_beats_in_the_threshold_and_is_a_few_seconds_at_most() -> None:
    assert interval_s(5) == 1.25
    assert interval_s(60) == 5.0


def test_sqlite_store_upserts_one_row_per_worker_and_reads_the_newest(tmp_path: Path) -> None:
    backend = f"db+sqlite:///{tmp_path}/results.sqlite"
    app = make_celery(CelerySettings(broker_url=f"sqla+sqlite:///{tmp_path}/broker.sqlite", result_backend=backend))
    store = heartbeats_for(app, 60)
    assert isinstance(store, SqlHeartbeats)
    assert store.latest() is None  # the table is created on first use, empty
    clock = FakeClock()
    worker = SqlHeartbeats(app.backend.ResultSession, clock)
    worker.beat("celery@a")
    clock.now += 10
    worker.beat("celery@b")
    assert store.latest() == clock.now
    clock.now += 10
    worker.beat("celery@a")  # again: its row is updated, not duplicated
    assert store.latest() == clock.now
    with app.backend.ResultSession() as session:
        rows = session.execute(text("select hostname from thinkmesh_worker_heartbeat"))
        assert sorted(row[0] for row in rows) == ["celery@a", "celery@b"]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


def test_redis_store_keeps_a_key_per_worker_that_expires_after_the_threshold(redis_url: str) -> None:
    app = make_celery(CelerySettings(broker_url=redis_url, result_backend=redis_url))
    store = heartbeats_for(app, 60)
    assert isinstance(store, RedisHeartbeats)
    assert store.latest() is None
    store.beat("celery@a")
    assert abs((store.latest() or 0) - time.time()) < 5
    ttl = app.backend.client.pttl("thinkmesh:worker:celery@a")
    assert 55_000 < ttl <= 60_000

    clock = FakeClock()
    short = RedisHeartbeats(app.backend.client, 0.3, clock)
    app.backend.client.delete("thinkmesh:worker:celery@a")
    short.beat("celery@a")
    clock.now += 1
    short.beat("celery@b")
    assert short.latest() == clock.now
    time.sleep(0.5)
    assert short.latest() is None  # a dead worker's key goes away by itself


def test_no_store_for_another_result_backend() -> None:
    assert heartbeats_for(Celery(backend="cache+memory://", set_as_current=False), 60) is None


def test_writer_writes_every_few_seconds_at_most() -> None:
    clock = FakeClock()
    store = MemoryHeartbeats(clock)
    write = BeatWriter(store, "celery@a", every_s=5, clock=clock)
    write()
    assert store.beats == {"celery@a": clock.now}
    first = clock.now
    clock.now += 4
    write()
    assert store.beats["celery@a"] == first  # too soon
    clock.now += 1
    write()
    assert store.beats["celery@a"] == clock.now


def test_writer_failures_never_raise_and_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    store = MemoryHeartbeats(clock)
    store.failing = True
    write = BeatWriter(store, "celery@a", every_s=1, clock=clock)
    with caplog.at_level(logging.WARNING, logger="services.search.heartbeats"):
        for _ in range(30):  # 30 s of failing writes
            write()
            clock.now += 1
        assert len(caplog.records) == 1
        clock.now += 30
        write()
        assert len(caplog.records) == 2
    store.failing = False
    clock.now += 1
    write()
    assert store.beats == {"celery@a": clock.now}


async def test_watch_waits_for_a_first_beat_then_reports_each_change_once() -> None:
    clock = FakeClock()
    store = MemoryHeartbeats(clock)
    watch = WorkerWatch(store, 10, every_s=0.01, clock=clock)
    reports: list[bool] = []

    async def report(serving: bool) -> None:
        reports.append(serving)

    watch.attach(report)
    ready = asyncio.create_task(watch.ready())
    await asyncio.sleep(0.05)
    assert not ready.done()  # no worker has ever beaten: not ready
    store.beat("celery@a")
    await asyncio.wait_for(ready, 1)
    await asyncio.sleep(0.05)
    assert reports == []  # still fresh: nothing to say

    clock.now += 10.5  # the worker went silent
    await asyncio.sleep(0.05)
    assert reports == [False]
    store.beat("celery@b")
    await asyncio.sleep(0.05)
    assert reports == [False, True]
    store.failing = True  # an unreadable backend counts as no worker
    await asyncio.sleep(0.05)
    assert reports == [False, True, False]
    await watch.stop()
    await watch.stop()  # twice is harmless
