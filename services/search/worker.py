"""`thinkmesh worker`: a Celery worker for the search queue."""

from __future__ import annotations

from typing import Any

from services.common.settings import load_settings
from services.search.celery_app import CelerySettings, make_celery


def run_worker(concurrency: int | None = None, queues: str | None = None) -> int:
    overrides: dict[str, Any] = {
        "worker_concurrency": concurrency,
        "queues": tuple(q.strip() for q in queues.split(",") if q.strip()) if queues else None,
    }
    settings = load_settings(CelerySettings, **overrides)
    app = make_celery(settings)
    argv = [
        "worker",
        "--loglevel=INFO",
        f"--concurrency={settings.worker_concurrency}",
        f"--queues={','.join(settings.queues)}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0
