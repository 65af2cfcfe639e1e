"""How many tasks wait in a Celery queue, read from the broker itself: for the SearchService's backpressure
(settings.max_solve_queue) and its queue-depth gauges (KEDA scales the workers on them).

Two brokers: Redis, where kombu keeps a queue as lists (one per priority step), and the embedded SQLite broker
(`celery_app.RedeliveringSqlaTransport`), where a waiting task is a visible row of `thinkmesh_message`. Tasks a
worker holds (delivered, not yet acknowledged) are not counted: they no longer wait. `CachedQueueDepth` in front
of either reads the broker at most once a second per queue and turns a broker error into "unknown" (None).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import redis
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from sqlalchemy import Boolean, Integer, String, column, create_engine, func, inspect, select, table, true
from sqlalchemy.engine import Engine

from services.search.celery_app import _TABLES, SQLA_TRANSPORT, broker_url_for_kombu, redis_tls_options
from services.search.settings import CelerySettings

log = logging.getLogger(__name__)

# A broker that does not answer within this long counts as unknown: a Solve never waits on it.
_BROKER_TIMEOUT_S = 1.0
DEFAULT_TTL_S = 1.0


class QueueDepth(Protocol):
    def depth(self, queue: str) -> int | None:
        """Tasks waiting in `queue`; None when unknown. A broker reader may raise; `CachedQueueDepth` does not."""
        ...


class RedisQueueDepth:
    """kombu's Redis transport keeps a queue as a list named after it for priority 0 and one list per further
    priority step (`<queue>\\x06\\x163`, …): LLEN of each, in one round trip."""

    def __init__(self, url: str, tls: dict[str, Any] | None = None) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=_BROKER_TIMEOUT_S, socket_connect_timeout=_BROKER_TIMEOUT_S, **(tls or {})
        )

    @staticmethod
    def keys(queue: str) -> list[str]:
        return [queue if step == 0 else f"{queue}{RedisChannel.sep}{step}" for step in PRIORITY_STEPS]

    def depth(self, queue: str) -> int:
        with self._client.pipeline(transaction=False) as pipe:
            for key in self.keys(queue):
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())

    def close(self) -> None:
        self._client.close()


# The embedded transport's own tables (celery_app._TABLES), just the columns counted here.
_QUEUES = table(_TABLES["queue_tablename"], column("id", Integer), column("name", String))
_MESSAGES = table(_TABLES["message_tablename"], column("queue_id", Integer), column("visible", Boolean))


class SqlaQueueDepth:
    """The embedded broker: visible rows of the queue (a delivered row is invisible until acked, deleted, or swept
    back after the visibility timeout). Before the first task the tables do not exist yet: nothing waits."""

    def __init__(self, url: str) -> None:
        """`url`: the database's SQLAlchemy URL (sqlite:///…), without the transport's prefix."""
        args = {"timeout": _BROKER_TIMEOUT_S} if url.startswith("sqlite") else {}
        self._engine: Engine = create_engine(url, connect_args=args)
        self._tables_exist = False

    def depth(self, queue: str) -> int:
        if not self._tables_exist:
            names = set(inspect(self._engine).get_table_names())
            if not {_QUEUES.name, _MESSAGES.name} <= names:
                return 0
            self._tables_exist = True
        waiting = (
            select(func.count())
            .select_from(_MESSAGES.join(_QUEUES, _MESSAGES.c.queue_id == _QUEUES.c.id))
            .where(_QUEUES.c.name == queue, _MESSAGES.c.visible == true())
        )
        with self._engine.connect() as connection:
            return int(connection.execute(waiting).scalar_one())

    def close(self) -> None:
        self._engine.dispose()


class CachedQueueDepth:
    """Reads each queue's depth at most once per `ttl_s`, however many callers ask (one read at a time; the others
    take its answer). A broker error is logged and answers None (unknown) until the next read."""

    def __init__(self, reader: QueueDepth, ttl_s: float = DEFAULT_TTL_S) -> None:
        self._reader = reader
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._read: dict[str, tuple[float, int | None]] = {}  # queue → (when read, depth)
        self._failing = False

    def depth(self, queue: str) -> int | None:
        with self._lock:
            now = time.monotonic()
            read = self._read.get(queue)
            if read is not None and now - read[0] < self._ttl_s:
                return read[1]
            value = self._read_broker(queue)
            self._read[queue] = (time.monotonic(), value)
            return value

    def _read_broker(self, queue: str) -> int | None:
        try:
            value = self._reader.depth(queue)
        except Exception as exc:  # any broker failure: unknown, never a failed Solve
            if not self._failing:
                log.warning("cannot read the depth of queue %s from the broker: %s", queue, exc, exc_info=exc)
            self._failing = True
            return None
        if self._failing:
            log.info("reading queue depths from the broker again")
            self._failing = False
        return value


def queue_depth_for(settings: CelerySettings, ttl_s: float = DEFAULT_TTL_S) -> CachedQueueDepth | None:
    """The cached depth reader for the broker `settings` name; None for a broker it cannot read (memory://)."""
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://")):
        tls = redis_tls_options(settings) if url.startswith("rediss://") else None
        return CachedQueueDepth(RedisQueueDepth(url, tls), ttl_s)
    kombu_url = broker_url_for_kombu(url)
    if kombu_url.startswith(f"{SQLA_TRANSPORT}+"):
        return CachedQueueDepth(SqlaQueueDepth(kombu_url.removeprefix(f"{SQLA_TRANSPORT}+")), ttl_s)
    return None
