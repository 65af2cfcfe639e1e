"""Worker heartbeats in the Celery result backend, so the SearchService can tell whether any worker is alive.

Each worker's consumer loop writes a beat (rate-limited: `BeatWriter`); the SearchService reads the newest one
(`WorkerWatch`) and says NOT_SERVING through gRPC health once none is newer than `health_stale_s`: with every
worker dead its Solve calls could only wait for their deadline. The store is the result backend both already
share: a key per worker with a TTL on Redis, a small table of its own on the embedded SQLite (SQLAlchemy)
backend. Any other backend has no store (`heartbeats_for` returns None) and health is not tied to workers.

Beat times are wall-clock seconds since the epoch, written by the worker and compared by the SearchService: on
separate machines their clocks must agree to well within `health_stale_s` (NTP does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sqlalchemy import Column, Float, MetaData, String, Table, func, insert, select, update

log = logging.getLogger(__name__)

REDIS_PREFIX = "thinkmesh:worker:"
# At most one beat written this often (and one health check made this often), however short the threshold.
MAX_INTERVAL_S = 5.0
# A failing store is logged at most this often, so a backend outage does not flood the log.
LOG_EVERY_S = 60.0

_metadata = MetaData()
# Its own table beside Celery's (celery_taskmeta, ...): one row per worker hostname.
HEARTBEATS = Table(
    "thinkmesh_worker_heartbeat",
    _metadata,
    Column("hostname", String(255), primary_key=True),
    Column("beat_at", Float, nullable=False),
)


class Heartbeats(Protocol):
    def beat(self, hostname: str) -> None:
        """Record that `hostname`'s consumer loop turned now."""

    def latest(self) -> float | None:
        """Seconds since the epoch of the newest beat still known, None without any."""


def interval_s(stale_s: float) -> float:
    """How often beats are written and read: several fit in the stale threshold."""
    return min(MAX_INTERVAL_S, stale_s / 4)


class RedisHeartbeats:
    """A key `thinkmesh:worker:<hostname>` per worker holding its last beat time; it expires after `stale_s`,
    so a dead worker's key goes away by itself."""

    def __init__(self, client: Any, stale_s: float, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._ttl_ms = max(1, int(stale_s * 1000))
        self._clock = clock

    def beat(self, hostname: str) -> None:
        self._client.set(f"{REDIS_PREFIX}{hostname}", repr(self._clock()), px=self._ttl_ms)

    def latest(self) -> float | None:
        keys = list(self._client.scan_iter(match=f"{REDIS_PREFIX}*", count=100))
        if not keys:
            return None
        beats = [float(value) for value in self._client.mget(keys) if value is not None]
        return max(beats, default=None)


class SqlHeartbeats:
    """Rows (hostname, beat_at) in a table of its own, through the result backend's SQLAlchemy sessions
    (`session()` returns a new Session; the table is created on first use)."""

    def __init__(self, session: Callable[[], Any], clock: Callable[[], float] = time.time) -> None:
        self._session = session
        self._clock = clock
        self._prepared = False

    def _open(self) -> Any:
        session = self._session()
        if not self._prepared:
            _metadata.create_all(session.get_bind(), checkfirst=True)
            self._prepared = True
        return session

    def beat(self, hostname: str) -> None:
        now = self._clock()
        with contextlib.closing(self._open()) as session:
            # An upsert any SQL dialect understands: the row exists after the worker's first beat.
            updated = session.execute(update(HEARTBEATS).where(HEARTBEATS.c.hostname == hostname).values(beat_at=now))
            if updated.rowcount == 0:
                session.execute(insert(HEARTBEATS).values(hostname=hostname, beat_at=now))
            session.commit()

    def latest(self) -> float | None:
        with contextlib.closing(self._open()) as session:
            value = session.execute(select(func.max(HEARTBEATS.c.beat_at))).scalar()
            return None if value is None else float(value)


def heartbeats_for(app: Any, stale_s: float) -> Heartbeats | None:
    """The store in `app`'s result backend: Redis or SQLAlchemy (db+...); None for any other backend."""
    from celery.backends.database import DatabaseBackend
    from celery.backends.redis import RedisBackend

    backend = app.backend
    if isinstance(backend, RedisBackend):
        return RedisHeartbeats(backend.client, stale_s)
    if isinstance(backend, DatabaseBackend):
        return SqlHeartbeats(backend.ResultSession)
    return None


class _Throttled:
    """Logs a failure at most once per LOG_EVERY_S."""

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self._what = what
        self._clock = clock
        self._logged: float | None = None

    def failed(self, exc: Exception) -> None:
        now = self._clock()
        if self._logged is None or now - self._logged >= LOG_EVERY_S:
            self._logged = now
            log.warning("%s failed (logged at most once a minute): %r", self._what, exc)


class BeatWriter:
    """Called on each of the worker's consumer beats: writes one to the store every `every_s` at most. A failed
    write is logged (at most once a minute) and never raised: the worker goes on taking tasks."""

    def __init__(
        self,
        heartbeats: Heartbeats,
        hostname: str,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._heartbeats = heartbeats
        self._hostname = hostname
        self._every_s = every_s
        self._clock = clock
        self._written: float | None = None
        self._errors = _Throttled(f"writing {hostname}'s heartbeat", clock)

    def __call__(self) -> None:
        now = self._clock()
        if self._written is not None and now - self._written < self._every_s:
            return
        self._written = now  # a failed write waits its turn too, not retried on every beat
        try:
            self._heartbeats.beat(self._hostname)
        except Exception as exc:  # any store error: the beat is lost, the worker must not be
            self._errors.failed(exc)


Report = Callable[[bool], Awaitable[None]]


class WorkerWatch:
    """The SearchService's side: SERVING only while some worker has beaten within `stale_s`.

    `ready` (serve's start-up hook, while health says NOT_SERVING) waits for the first fresh beat, so a
    SearchService without workers is not ready: it could not solve anything. Then a background task re-reads
    the newest beat every `interval_s(stale_s)` and reports each change through `attach`'s report function.
    """

    def __init__(
        self,
        heartbeats: Heartbeats,
        stale_s: float,
        *,
        every_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._heartbeats = heartbeats
        self._stale_s = stale_s
        self._every_s = interval_s(stale_s) if every_s is None else every_s
        self._clock = clock
        self._report: Report | None = None
        self._task: asyncio.Task[None] | None = None
        self._errors = _Throttled("reading the workers' heartbeats", time.monotonic)

    def attach(self, report: Report) -> None:
        self._report = report

    async def fresh(self) -> bool:
        """Whether some worker beat within `stale_s` (False when the store cannot be read)."""
        try:
            latest = await asyncio.to_thread(self._heartbeats.latest)
        except Exception as exc:  # an unreadable backend: results could not be read either
            self._errors.failed(exc)
            return False
        return latest is not None and self._clock() - latest <= self._stale_s

    async def ready(self) -> None:
        if not await self.fresh():
            log.info("waiting for a search worker's heartbeat")
            while not await self.fresh():
                await asyncio.sleep(self._every_s)
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        serving = True  # serve says SERVING once `ready` returns
        while True:
            await asyncio.sleep(self._every_s)
            now_serving = await self.fresh()
            if now_serving != serving and self._report is not None:
                log.warning("search workers %s", "beating again" if now_serving else f"silent for {self._stale_s}s")
                await self._report(now_serving)
            serving = now_serving

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
