"""Serve a scripted GenerationEngine as a real PolicyService (THINKMESH_POLICY_* settings, the shared lifecycle)."""

from __future__ import annotations

from services.common.server import Service, serve, service_name
from services.common.settings import load_settings
from services.policy.core import Limits, PolicyCore
from services.policy.engine import GenerationEngine
from services.policy.servicer import PolicyServicer
from services.policy.settings import PolicySettings
from thinkmesh.v1 import policy_pb2, policy_pb2_grpc


async def serve_engine(engine: GenerationEngine) -> None:
    settings = load_settings(PolicySettings)
    core = PolicyCore(Limits(default_n=4, max_n=64, max_prompts=1024, default_max_new_tokens=64, max_new_tokens=1024))
    await core.slot.install(engine)
    servicer = PolicyServicer(core)
    await serve(
        settings,
        [
            Service(
                service_name(policy_pb2, "PolicyService"),
                lambda server: policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server),
            )
        ],
    )
