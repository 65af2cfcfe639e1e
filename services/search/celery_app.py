"""The Celery application that carries search work to workers.

Broker and results: Redis in a cluster (TLS with rediss:// URLs); for the embedded default, SQLite through kombu's
SQLAlchemy transport, so one machine needs no server. Tasks are acknowledged late and rejected when their worker
dies, so a task whose worker is killed runs again elsewhere (tasks are idempotent: see
services/search/worker/tasks.py).
The SearchService and the trainer send tasks by name (protocol.SOLVE); only the worker registers them.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from celery import Celery

from services.common.settings import load_settings
from services.search.settings import SEARCH_QUEUE, CelerySettings, SearchSettings

# kombu's SQLAlchemy transport polls once a second by default: ≈1 s per task round trip. Its broker options go
# to SQLAlchemy's create_engine, so the interval is set on the transport class instead (measured: 0.02 s gives
# ≈30 ms p50 round trips, and the polling costs little CPU).
SQLITE_POLLING_INTERVAL_S = 0.02


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
        task_track_started=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s}
        if settings.broker_url.startswith(("redis://", "rediss://"))
        else {},
    )
    # Every Redis connection goes through these two: kombu's for the broker, the result backend's (which
    # services/search/cancellation.py uses for its flags too).
    if settings.broker_url.startswith("rediss://"):
        app.conf.broker_use_ssl = redis_tls_options(settings)
    if settings.result_backend.startswith("rediss://"):
        app.conf.redis_backend_use_ssl = redis_tls_options(settings)
    return app  # the tasks are registered by the worker that runs them; everyone else sends them by name
