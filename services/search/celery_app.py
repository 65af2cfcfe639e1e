"""The Celery application that carries search work to workers.

Broker and results: Redis in a cluster; for the embedded default, SQLite through kombu's SQLAlchemy
transport, so one machine needs no server. Tasks are acknowledged late and rejected when their worker dies, so
a task whose worker is killed runs again elsewhere (tasks are idempotent: see the search issue's tasks module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from celery import Celery

from services.common.settings import load_settings, require

SEARCH_QUEUE = "search"

# kombu's SQLAlchemy transport polls once a second by default: ≈1 s per task round trip. Its broker options go
# to SQLAlchemy's create_engine, so the interval is set on the transport class instead (measured: 0.02 s gives
# ≈30 ms p50 round trips, and the polling costs little CPU).
SQLITE_POLLING_INTERVAL_S = 0.02


@dataclass(frozen=True)
class CelerySettings:
    SERVICE: ClassVar[str] = "search"

    broker_url: str = "sqla+sqlite:///.thinkmesh/celery-broker.sqlite"
    result_backend: str = "db+sqlite:///.thinkmesh/celery-results.sqlite"
    # Worker processes per `thinkmesh worker`; each runs many trees at once.
    worker_concurrency: int = 1
    queues: tuple[str, ...] = (SEARCH_QUEUE,)

    def validate(self) -> None:
        require(self.worker_concurrency > 0, self, "worker_concurrency", "must be at least 1")
        require(bool(self.queues), self, "queues", "name at least one queue")


def _ensure_sqlite_dirs(*urls: str) -> None:
    for url in urls:
        if "sqlite:///" in url:
            path = Path(url.split("sqlite:///", 1)[1])
            path.parent.mkdir(parents=True, exist_ok=True)


def make_celery(settings: CelerySettings | None = None) -> Celery:
    settings = settings or load_settings(CelerySettings)
    _ensure_sqlite_dirs(settings.broker_url, settings.result_backend)
    if settings.broker_url.startswith("sqla+"):
        from kombu.transport import sqlalchemy as sqla_transport

        sqla_transport.Transport.polling_interval = SQLITE_POLLING_INTERVAL_S
    app = Celery("thinkmesh", broker=settings.broker_url, backend=settings.result_backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=SEARCH_QUEUE,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_extended=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    register_tasks(app)
    return app


def register_tasks(app: Celery) -> None:
    @app.task(name="thinkmesh.ping")  # type: ignore[untyped-decorator]
    def ping() -> str:
        """Liveness probe for workers: answers without touching any model or service."""
        return "pong"
