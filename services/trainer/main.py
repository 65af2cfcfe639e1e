"""The TrainerService wiring: settings → store, Celery dispatcher → core → servicer → server, and the round a
stopped trainer left queued or running resumed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.common.errors import ConfigError, InvalidInput
from services.common.logs import configure_logging
from services.common.server import Service, serve, service_name
from services.common.settings import load_settings
from services.common.store import ModelStore
from services.trainer.config import parse_retries, preset
from services.trainer.core import TrainerCore
from services.trainer.servicer import TrainerServicer
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import make_runner_factory
from thinkmesh.v1 import trainer_pb2, trainer_pb2_grpc


async def run(**overrides: Any) -> None:
    settings = load_settings(TrainerSettings, **overrides)
    configure_logging(settings.log_format, settings.log_level)
    store = ModelStore()
    config = preset(
        settings.preset,
        unsolved_retries=parse_retries(settings.unsolved_retries) or None,
        frontier_retries=parse_retries(settings.frontier_retries) or None,
    )
    core = TrainerCore(store, config, make_runner_factory(settings, store))
    try:  # the server's own pool and evaluation, checked like a client's
        core.config = replace(
            core.config,
            pool_file=core.in_store(settings.pool_file, "pool_file") if settings.pool_file else "",
            eval_dataset=core.eval_source(settings.eval_dataset) if settings.eval_dataset else "",
            teacher_target=settings.teacher_target,
        )
    except InvalidInput as exc:
        raise ConfigError(f"THINKMESH_TRAINER_POOL_FILE / THINKMESH_TRAINER_EVAL_DATASET: {exc}") from exc
    servicer = TrainerServicer(core)

    async def resume() -> None:  # a round queued or running when the trainer last stopped goes on
        core.resume()

    await serve(
        settings,
        [
            Service(
                service_name(trainer_pb2, "TrainerService"),
                lambda server: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicer, server),
            )
        ],
        ready=resume,
    )
