"""The Celery application that carries search work to workers.

Broker and results: Redis in a cluster (TLS with rediss:// URLs); for the embedded default, SQLite through kombu's
SQLAlchemy transport, so one machine needs no server. Tasks are acknowledged late and rejected when their worker
dies, so a task whose worker is killed runs again elsewhere (tasks are idempotent: see
services/search/worker/tasks.py): Redis redelivers an unacknowledged message after `visibility_timeout_s`, and so
does the embedded broker (`RedeliveringSqlaTransport` below, which every sqla+ URL is given).
The SearchService and the trainer send tasks by name (protocol.SOLVE); only the worker registers them.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from json import loads
from pathlib import Path
from queue import Empty
from typing import Any

from celery import Celery
from kombu.connection import Connection
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import sqlalchemy as sqla
from sqlalchemy import create_engine, delete, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from services.common.settings import load_settings
from services.search.settings import SOLVE_QUEUE, CelerySettings, SearchSettings

log = logging.getLogger(__name__)

# kombu's SQLAlchemy transport polls once a second by default: ≈1 s per task round trip (measured: 0.02 s gives
# ≈30 ms p50 round trips, and the polling costs little CPU).
SQLITE_POLLING_INTERVAL_S = 0.02

# ----------------------------------------------------------------------------------------- the embedded broker
# kombu's SQLAlchemy transport marks a row visible=False when it hands the message out and never looks at it again:
# an ack changes nothing in the table (acknowledged and in-flight rows look the same, so nothing can tell the
# message of a dead consumer apart), only a consumer that closes its channel cleanly puts its unacknowledged
# messages back (as new rows), and a SIGKILLed one takes them with it. This subclass gives it what the Redis
# transport has: an ack deletes the row, a requeue makes the same row visible again, and every consumer sweeps
# rows delivered more than the visibility timeout ago back into the queue. Its own tables: the stock transport's
# table keeps every message it ever delivered as visible=False, and a sweep would run them all again.
SQLA_TRANSPORT = "thinkmesh-sqla"
_TABLES = {"queue_tablename": "thinkmesh_queue", "message_tablename": "thinkmesh_message"}
# Transport options that are not create_engine() arguments (the stock channel passes the rest to SQLAlchemy).
_NOT_FOR_ENGINE = {
    "queue_tablename",
    "message_tablename",
    "callback",
    "errback",
    "max_retries",
    "interval_start",
    "interval_step",
    "interval_max",
    "retry_errors",
    "polling_interval",
    "visibility_timeout",
}
_DEFAULT_VISIBILITY_TIMEOUT_S = CelerySettings.visibility_timeout_s


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the column is naive; every writer of it stores UTC


class _DeletingQoS(virtual.QoS):
    """Acknowledged and rejected messages leave the table. Acks arrive from the pool's threads and only mark the
    tag (`_dirty`); the rows go in the consuming thread, which owns the channel's session."""

    def _flush(self) -> None:
        done = []
        while True:
            try:
                tag = self._dirty.pop()
            except KeyError:
                break
            self._delivered.pop(tag, None)
            done.append(tag)
        self.channel._delete_delivered(done)


class _RedeliveringChannel(sqla.Channel):
    QoS = _DeletingQoS

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        options = connection.client.transport_options
        self.visibility_timeout = float(options.get("visibility_timeout", _DEFAULT_VISIBILITY_TIMEOUT_S))
        # A sweep is one UPDATE: every 10 s at most, as often as a short timeout needs.
        self._sweep_interval = min(10.0, self.visibility_timeout / 2)
        self._next_sweep = 0.0
        self._rows: dict[str, int] = {}  # delivery tag → row id, for messages this channel delivered, not yet acked
        self._undeleted: list[int] = []  # acked rows whose delete failed (the database was busy): next turn
        self._no_ack_queues: set[str] = set()
        super().__init__(connection, **kwargs)  # type: ignore[no-untyped-call]

    def _configure_entity_tablenames(self, opts: dict[str, Any]) -> None:
        super()._configure_entity_tablenames({**_TABLES, **opts})  # type: ignore[no-untyped-call]
        # kombu keeps one model class per name for the whole process: the first channel's table names win.
        if self.message_cls.__tablename__ != self.message_tablename:
            raise RuntimeError(f"this process already uses kombu's SQLAlchemy table {self.message_cls.__tablename__}")

    def _engine_from_config(self) -> Engine:
        client = self.connection.client
        options = {k: v for k, v in client.transport_options.items() if k not in _NOT_FOR_ENGINE}
        return create_engine(client.hostname, **options)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        # The stock _get, plus: the delivery time (for the sweep) and the row, so that the ack can delete it.
        obj = self._get_or_create(queue)  # type: ignore[no-untyped-call]
        cls = self.message_cls
        if self.session.bind.name == "sqlite":
            self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            msg = (
                self.session.query(cls)
                .with_for_update()
                .filter(cls.queue_id == obj.id)
                .filter(cls.visible != False)  # noqa: E712 - SQL, not Python
                .order_by(cls.sent_at)
                .order_by(cls.id)
                .limit(1)
                .first()
            )
            if msg is None:
                raise Empty()
            payload: dict[str, Any] = loads(msg.payload)
            row, acked = msg.id, queue in self._no_ack_queues
            if acked:
                self.session.delete(msg)
            else:
                msg.visible = False
                msg.sent_at = _utcnow()
        finally:
            self.session.commit()
        tag = payload.get("properties", {}).get("delivery_tag")
        if not acked and tag is not None:
            self._rows[tag] = row
        return payload

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:  # never acknowledged: delivered is done
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[no-untyped-call]

    def basic_cancel(self, consumer_tag: str) -> Any:
        self._no_ack_queues.discard(self._tag_to_queue.get(consumer_tag, ""))
        return super().basic_cancel(consumer_tag)  # type: ignore[no-untyped-call]

    def drain_events(self, timeout: float | None = None, callback: Any = None) -> Any:
        if self._consumers:
            self._housekeeping()
        return super().drain_events(timeout=timeout, callback=callback)  # type: ignore[no-untyped-call]

    def _housekeeping(self) -> None:
        if self.qos._dirty or self._undeleted:
            self.qos._flush()
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval
            self.restore_delivered(older_than_s=self.visibility_timeout)

    def _delete_delivered(self, tags: Iterable[str]) -> None:
        ids = self._undeleted + [self._rows.pop(tag) for tag in tags if tag in self._rows]
        if not ids:
            return
        try:
            self.session.execute(delete(self.message_cls).where(self.message_cls.id.in_(ids)))
            self.session.commit()
            self._undeleted = []
        except OperationalError:
            self.session.rollback()
            self._undeleted = ids

    def _restore(self, message: Any) -> None:
        """A requeue (reject, or unacked messages when the channel closes): the same row becomes visible again."""
        row = self._rows.pop(message.delivery_tag, None)
        if row is None:
            super()._restore(message)  # type: ignore[no-untyped-call]
            return
        try:
            self._make_visible(self.message_cls.id == row)
        except OperationalError:  # it stays delivered: the visibility sweep brings it back
            self.session.rollback()
            log.warning("could not requeue message %s now; it is redelivered after the visibility timeout", row)

    def restore_delivered(self, older_than_s: float) -> int:
        """Put back every message delivered more than `older_than_s` seconds ago (0: every one) and never
        acknowledged, except those this channel holds: its consumer is alive, it is this process."""
        cls = self.message_cls
        conditions = [cls.visible == False]  # noqa: E712 - SQL, not Python
        if older_than_s > 0:
            conditions.append(cls.sent_at < _utcnow() - timedelta(seconds=older_than_s))
        held = [*self._rows.values(), *self._undeleted]
        if held:
            conditions.append(cls.id.not_in(held))
        try:
            restored = self._make_visible(*conditions)
        except OperationalError:
            self.session.rollback()
            return 0
        if restored:
            since = f"more than {older_than_s:.0f} s ago" if older_than_s > 0 else "to consumers that are gone"
            log.warning("redelivering %d message(s) delivered %s and never acknowledged", restored, since)
        return restored

    def _make_visible(self, *conditions: Any) -> int:
        cls = self.message_cls
        result = self.session.execute(
            update(cls)
            .where(*conditions)
            .values(visible=True, sent_at=None, version=cls.version + 1)  # sent_at None: in id order, first
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        return int(getattr(result, "rowcount", 0) or 0)


class RedeliveringSqlaTransport(sqla.Transport):
    """kombu's SQLAlchemy transport with acks that delete and a visibility timeout, as the Redis transport has."""

    Channel = _RedeliveringChannel


def _register_sqla_transport() -> None:
    TRANSPORT_ALIASES[SQLA_TRANSPORT] = f"{__name__}:RedeliveringSqlaTransport"


def broker_url_for_kombu(url: str) -> str:
    """A sqla+ (or sqlalchemy+) broker URL goes to `RedeliveringSqlaTransport`; any other URL is kept."""
    scheme, plus, rest = url.partition("+")
    if plus and scheme in ("sqla", "sqlalchemy") and "://" in rest:
        _register_sqla_transport()
        return f"{SQLA_TRANSPORT}+{rest}"
    return url


def restore_unacknowledged(settings: CelerySettings) -> int:
    """Put every delivered, unacknowledged message of an embedded (sqla+) broker back in its queue; returns how many.

    Only for a broker whose consumers are all known to be dead — the local stack, between the death of its one
    worker and its restart — since a live consumer's messages would run twice. Anyone else waits for the
    visibility timeout."""
    url = broker_url_for_kombu(settings.broker_url)
    if not url.startswith(f"{SQLA_TRANSPORT}+"):
        raise ValueError(f"{settings.broker_url}: only an embedded sqla+ broker can be restored this way")
    _ensure_sqlite_dirs(settings.broker_url)
    with Connection(url) as connection:  # type: ignore[no-untyped-call]
        return connection.default_channel.restore_delivered(older_than_s=0)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------- the app


def _ensure_sqlite_dirs(*urls: str) -> None:
    for url in urls:
        if "sqlite:///" in url:
            path = Path(url.split("sqlite:///", 1)[1])
            path.parent.mkdir(parents=True, exist_ok=True)


def redis_tls_options(settings: CelerySettings) -> dict[str, Any]:
    """redis-py's TLS arguments for a rediss:// URL: the server's certificate is always verified (against
    `broker_tls_ca`, or the system's CAs), and a client certificate is presented when one is set."""
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.broker_tls_ca is not None:
        options["ssl_ca_certs"] = str(settings.broker_tls_ca)
    if settings.broker_tls_cert is not None and settings.broker_tls_key is not None:
        options["ssl_certfile"] = str(settings.broker_tls_cert)
        options["ssl_keyfile"] = str(settings.broker_tls_key)
    return options


def make_celery(settings: CelerySettings | None = None) -> Celery:
    settings = settings or load_settings(SearchSettings).celery
    settings.validate()
    _ensure_sqlite_dirs(settings.broker_url, settings.result_backend)
    broker_url = broker_url_for_kombu(settings.broker_url)
    # Redis and the embedded broker redeliver a dead worker's task after the same timeout.
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if broker_url.startswith(f"{SQLA_TRANSPORT}+"):
        transport_options["polling_interval"] = SQLITE_POLLING_INTERVAL_S
    app = Celery("thinkmesh", broker=broker_url, backend=settings.result_backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Solve tasks (the SearchService's) go to the default queue; a round's name theirs (settings.QUEUES).
        task_default_queue=SOLVE_QUEUE,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_extended=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_track_started=True,
        broker_transport_options=transport_options,
    )
    # Every Redis connection goes through these two: kombu's for the broker, the result backend's (which
    # services/search/cancellation.py uses for its flags too).
    if settings.broker_url.startswith("rediss://"):
        app.conf.broker_use_ssl = redis_tls_options(settings)
    if settings.result_backend.startswith("rediss://"):
        app.conf.redis_backend_use_ssl = redis_tls_options(settings)
    return app  # the tasks are registered by the worker that runs them; everyone else sends them by name
