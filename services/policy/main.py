"""The PolicyService wiring: settings → engine loader → core → servicer → server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from services.common.hot_reload import InPlace, ModelSource
from services.common.logs import configure_logging
from services.common.server import Service, serve, service_name
from services.common.settings import load_settings
from services.common.store import ModelStore
from services.policy.core import Limits, PolicyCore
from services.policy.engine import GenerationEngine, ReloadsInPlace
from services.policy.servicer import PolicyServicer
from services.policy.settings import PolicySettings
from thinkmesh.v1 import policy_pb2, policy_pb2_grpc

log = logging.getLogger(__name__)


def engine_loader(settings: PolicySettings, store: ModelStore):  # type: ignore[no-untyped-def]
    """`async load(version_or_path) -> GenerationEngine` for the configured backend."""

    def build(name: str) -> GenerationEngine:
        if settings.backend == "openai":
            from services.policy.openai_engine import OpenAIEngine

            return OpenAIEngine(
                settings.openai_base_url, name, settings.openai_api_key_file, few_shot=settings.few_shot
            )
        path, version = store.resolve("policy", name)
        if settings.backend == "vllm":
            from services.policy.vllm_engine import VLLMEngine

            return VLLMEngine(path, version, engine_args=settings.vllm.engine_args())
        from services.policy.hf_engine import HFEngine

        return HFEngine(
            path,
            version,
            device=settings.device,
            batch_window_ms=settings.batch_window_ms,
            max_batch_sequences=settings.max_batch_sequences,
            prefix_cache_mb=settings.prefix_cache_mb,
            lean_decoding=settings.lean_decoding,
        )

    async def load(name: str) -> GenerationEngine:
        return await asyncio.to_thread(build, name)

    return load


def in_place_loader(store: ModelStore) -> InPlace[GenerationEngine]:
    """`async reload(engine, version_or_path) -> bool`: the `inplace` reload of an engine that can take new weights
    (the vllm backend); False, touching nothing, for another engine or a version that cannot go in place."""

    async def reload(engine: GenerationEngine, name: str) -> bool:
        if not isinstance(engine, ReloadsInPlace):
            return False
        path, version = store.resolve("policy", name)
        obstacle = await asyncio.to_thread(engine.in_place_obstacle, Path(path))  # loads two tokenizers
        if obstacle is not None:
            log.info("policy %s cannot be loaded in place: %s", version, obstacle)
            return False
        await engine.reload_in_place(Path(path), version)
        return True

    return reload


async def run(**overrides: Any) -> None:
    settings = load_settings(PolicySettings, **overrides)
    configure_logging(settings.log_format, settings.log_level)
    store = ModelStore()
    core = PolicyCore(
        Limits(
            default_n=settings.default_n,
            max_n=settings.max_n,
            max_prompts=settings.max_prompts,
            default_max_new_tokens=settings.default_max_new_tokens,
            max_new_tokens=settings.max_new_tokens,
            max_prompt_chars=settings.max_prompt_chars,
            max_request_chars=settings.max_request_chars,
            max_temperature=settings.max_temperature,
        )
    )
    source = ModelSource(
        core.slot,
        "policy",
        lambda: store.current_name("policy"),
        engine_loader(settings, store),
        pinned=settings.model or (settings.openai_model if settings.backend == "openai" else ""),
        interval_s=settings.reload_interval_s,
        reload=settings.reload_mode,
        reload_in_place=in_place_loader(store),
    )
    servicer = PolicyServicer(core)
    await serve(
        settings,
        [
            Service(
                service_name(policy_pb2, "PolicyService"),
                lambda server: policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server),
            )
        ],
        ready=source.start,
        on_stop=source.stop,
        health=source.report_serving_to,
    )
