"""`thinkmesh worker`: a Celery worker for the search queue."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_shutdown

from services.common.logs import configure_logging
from services.common.server import start_metrics
from services.common.settings import load_settings
from services.search.celery_app import make_celery
from services.search.settings import SearchSettings
from services.search.worker.health_celery import serve_health
from services.search.worker.tasks import register_tasks


def _close_runtime(**_: Any) -> None:
    from services.search.worker.runtime import WorkerRuntime

    WorkerRuntime.close_shared()


def run_worker(concurrency: int | None = None, queues: str | None = None) -> int:
    overrides: dict[str, Any] = {
        "worker_concurrency": concurrency,
        "queues": tuple(q.strip() for q in queues.split(",") if q.strip()) if queues else None,
    }
    settings = load_settings(SearchSettings, **overrides)
    # Celery leaves the root logger alone (worker_hijack_root_logger=False): ours logs as every service does.
    configure_logging(settings.log_format, settings.log_level)
    start_metrics(settings)  # batch sizes and stage times of the searches this worker runs
    app = make_celery(settings.celery)
    register_tasks(app)
    serve_health(app, settings)  # heartbeats for the SearchService's health; /livez, /readyz when health_port is set
    # The runtime (built by the first task) holds gRPC channels and the grader's processes: close them on the way out.
    worker_shutdown.connect(_close_runtime, weak=False)
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
