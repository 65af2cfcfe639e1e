"""The SearchService wiring: settings → Celery app → core → servicer → server."""

from __future__ import annotations

import asyncio
from typing import Any

from services.common.logs import configure_logging
from services.common.server import Service, serve, service_name
from services.common.settings import load_settings
from services.search.celery_app import make_celery
from services.search.heartbeats import WorkerWatch, heartbeats_for
from services.search.queue_depth import queue_depth_for
from services.search.service.core import SearchCore
from services.search.service.metrics import export_queue_depths
from services.search.service.servicer import SearchServicer
from services.search.service.task_events import TaskEvents
from services.search.settings import QUEUES, SearchSettings
from thinkmesh.v1 import search_pb2, search_pb2_grpc


async def run(**overrides: Any) -> None:
    settings = load_settings(SearchSettings, **overrides)
    configure_logging(settings.log_format, settings.log_level)
    app = make_celery(settings.celery)
    # The solve queue's depth bounds admission (max_solve_queue); every queue's is a gauge, read when scraped.
    queue_depth = queue_depth_for(settings.celery)
    if queue_depth is not None:
        export_queue_depths(queue_depth, QUEUES)
    # Each Solve hears its task's states as the worker writes them (a Redis result backend); else it polls.
    events = TaskEvents.for_app(app)
    if events is not None:
        events.start()
    servicer = SearchServicer(SearchCore(settings, app, queue_depth, events))
    # SERVING only while some worker's heartbeat is fresh (none at all: NOT_SERVING until one beats); a result
    # backend without a heartbeat store leaves health untied to the workers.
    heartbeats = heartbeats_for(app, settings.health_stale_s)
    watch = None if heartbeats is None else WorkerWatch(heartbeats, settings.health_stale_s)

    async def stop() -> None:
        if watch is not None:
            await watch.stop()
        if events is not None:
            await asyncio.to_thread(events.close)

    await serve(
        settings,
        [
            Service(
                service_name(search_pb2, "SearchService"),
                lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, server),
            )
        ],
        ready=None if watch is None else watch.ready,
        on_stop=stop,
        health=None if watch is None else watch.attach,
    )
