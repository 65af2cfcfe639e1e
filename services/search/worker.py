"""`thinkmesh worker`: a Celery worker for the search queue."""

from __future__ import annotations

from typing import Any

from services.common.server import start_metrics
from services.common.settings import load_settings
from services.search.celery_app import make_celery
from services.search.settings import SearchSettings


def run_worker(concurrency: int | None = None, queues: str | None = None) -> int:
    overrides: dict[str, Any] = {
        "worker_concurrency": concurrency,
        "queues": tuple(q.strip() for q in queues.split(",") if q.strip()) if queues else None,
    }
    settings = load_settings(SearchSettings, **overrides)
    start_metrics(settings)  # batch sizes and stage times of the searches this worker runs
    app = make_celery(settings)
    argv = [
        "worker",
        "--loglevel=INFO",
        # Threads: every task of this process hands its search to one shared loop, so their trees batch together.
        "--pool=threads",
        f"--concurrency={settings.worker_concurrency}",
        f"--queues={','.join(settings.queues)}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0
