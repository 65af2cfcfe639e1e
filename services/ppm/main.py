"""The PPMService wiring: settings → scorer loader → core → servicer → server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from services.common.hot_reload import ModelSource
from services.common.logs import configure_logging
from services.common.server import Service, serve, service_name
from services.common.settings import load_settings
from services.common.store import ModelStore
from services.ppm.core import PPMCore
from services.ppm.scorer import StepScorer
from services.ppm.servicer import PPMServicer
from services.ppm.settings import PPMSettings
from thinkmesh.v1 import ppm_pb2, ppm_pb2_grpc


def scorer_loader(settings: PPMSettings, store: ModelStore) -> Callable[[str], Awaitable[StepScorer]]:
    def build(name: str) -> StepScorer:
        path, version = store.resolve("ppm", name)
        if settings.backend == "vllm":
            from services.ppm.vllm_scorer import VLLMScorer

            return VLLMScorer(path, version, engine_args=settings.vllm.engine_args("ppm"))
        from services.ppm.scorer import HFScorer

        return HFScorer(
            path,
            version,
            device=settings.device,
            batch_window_ms=settings.batch_window_ms,
            max_batch=settings.max_batch_items,
        )

    async def load(name: str) -> StepScorer:
        return await asyncio.to_thread(build, name)

    return load


async def run(**overrides: Any) -> None:
    settings = load_settings(PPMSettings, **overrides)
    configure_logging(settings.log_format, settings.log_level)
    store = ModelStore()
    core = PPMCore(
        settings.max_items,
        settings.max_steps_per_item,
        max_item_chars=settings.max_item_chars,
        max_request_chars=settings.max_request_chars,
    )
    source = ModelSource(
        core.slot,
        "ppm",
        lambda: store.current_name("ppm"),
        scorer_loader(settings, store),
        pinned=settings.model,
        interval_s=settings.reload_interval_s,
        reload=settings.reload_mode,
    )
    servicer = PPMServicer(core)
    await serve(
        settings,
        [
            Service(
                service_name(ppm_pb2, "PPMService"),
                lambda server: ppm_pb2_grpc.add_PPMServiceServicer_to_server(servicer, server),
            )
        ],
        ready=source.start,
        on_stop=source.stop,
        health=source.report_serving_to,
    )
