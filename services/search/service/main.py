"""The SearchService wiring: settings → Celery app → core → servicer → server."""

from __future__ import annotations

from typing import Any

from services.common.logs import configure_logging
from services.common.server import Service, serve, service_name
from services.common.settings import load_settings
from services.search.celery_app import make_celery
from services.search.service.core import SearchCore
from services.search.service.servicer import SearchServicer
from services.search.settings import SearchSettings
from thinkmesh.v1 import search_pb2, search_pb2_grpc


async def run(**overrides: Any) -> None:
    settings = load_settings(SearchSettings, **overrides)
    configure_logging(settings.log_format, settings.log_level)
    servicer = SearchServicer(SearchCore(settings, make_celery(settings.celery)))
    await serve(
        settings,
        [
            Service(
                service_name(search_pb2, "SearchService"),
                lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, server),
            )
        ],
    )
