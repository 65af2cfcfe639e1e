"""Waiting for the services to serve the store's current versions before a round searches (THINKMESH_TRAINER_WAIT_FOR),
against real PolicyService and PPMService servers on 127.0.0.1 with tiny engines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.errors import ConfigError
from services.common.server import GrpcServer, ServerSettings, Service, service_name
from services.common.settings import load_settings
from services.common.store import Lineage, ModelStore
from services.policy.core import Limits, PolicyCore
from services.policy.servicer import PolicyServicer
from services.ppm.core import PPMCore
from services.ppm.servicer import PPMServicer
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import wait_for_current
from support.versioned_model import VersionedModel
from thinkmesh.v1 import policy_pb2, policy_pb2_grpc, ppm_pb2, ppm_pb2_grpc

LIMITS = Limits(default_n=1, max_n=4, max_prompts=4, default_max_new_tokens=4, max_new_tokens=4)


@contextlib.asynccontextmanager
async def policy_server(version: str) -> AsyncIterator[tuple[str, PolicyCore]]:
    core = PolicyCore(LIMITS)
    await core.slot.install(VersionedModel(version))
    servicer = PolicyServicer(core)
    name = service_name(policy_pb2, "PolicyService")
    server = GrpcServer(
        ServerSettings(), [Service(name, lambda s: policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, s))]
    )
    address = await server.start()
    try:
        yield address, core
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def ppm_server(version: str) -> AsyncIterator[str]:
    core = PPMCore(8, 8)
    await core.slot.install(VersionedModel(version))
    servicer = PPMServicer(core)
    name = service_name(ppm_pb2, "PPMService")
    server = GrpcServer(
        ServerSettings(), [Service(name, lambda s: ppm_pb2_grpc.add_PPMServiceServicer_to_server(servicer, s))]
    )
    address = await server.start()
    try:
        yield address
    finally:
        await server.stop(0)


def store_with(tmp_path: Path, policy_versions: int, ppm_versions: int) -> ModelStore:
    def write(directory: Path) -> None:
        (directory / "config.json").write_text("{}")

    store = ModelStore(tmp_path)
    for kind, count in (("policy", policy_versions), ("ppm", ppm_versions)):
        for _ in range(count):
            store.publish(kind, write, Lineage())
    return store


def trainer(policy: str, ppm: str, wait_for: str) -> TrainerSettings:
    env = {"THINKMESH_TRAINER_WAIT_FOR": wait_for}
    return load_settings(TrainerSettings, environ=env, policy_target=policy, ppm_target=ppm)


async def test_a_pinned_policy_is_left_out_and_only_the_ppm_is_compared(tmp_path: Path) -> None:
    store = store_with(tmp_path, policy_versions=1, ppm_versions=2)
    async with policy_server("Qwen2.5-Math-7B") as (policy, _), ppm_server("v2") as ppm:
        await asyncio.to_thread(wait_for_current(trainer(policy, ppm, "ppm"), store, timeout_s=10))
        # Waiting for both would wait for a version the pinned policy never serves.
        with pytest.raises(TimeoutError, match=r"'policy': \['Qwen2\.5-Math-7B'\]"):
            await asyncio.to_thread(wait_for_current(trainer(policy, ppm, "policy,ppm"), store, timeout_s=0.5))


async def test_both_services_on_the_current_versions(tmp_path: Path) -> None:
    store = store_with(tmp_path, policy_versions=3, ppm_versions=2)
    async with policy_server("v3") as (policy, _), ppm_server("v2") as ppm:
        settings = trainer(policy, ppm, "policy,ppm")
        assert settings.wait_for == ("policy", "ppm")
        await asyncio.to_thread(wait_for_current(settings, store, timeout_s=10))


async def test_every_replica_asked_must_serve_the_current_version(tmp_path: Path) -> None:
    store = store_with(tmp_path, policy_versions=2, ppm_versions=1)
    async with policy_server("v2") as (new, _), policy_server("v1") as (old, old_core):
        # One target, two pods, round-robin: what a headless Service gives during a rollout.
        target = f"ipv4:{new},{old}"
        settings = trainer(target, "127.0.0.1:1", "policy")
        with pytest.raises(TimeoutError, match=r"'policy': \['v1', 'v2'\]"):
            await asyncio.to_thread(wait_for_current(settings, store, timeout_s=1))
        await old_core.slot.install(VersionedModel("v2"))
        await asyncio.to_thread(wait_for_current(settings, store, timeout_s=10))


def test_nothing_to_wait_for_calls_nothing(tmp_path: Path) -> None:
    store = store_with(tmp_path, policy_versions=1, ppm_versions=1)
    settings = trainer("127.0.0.1:1", "127.0.0.1:1", "")
    assert settings.wait_for == ()
    wait_for_current(settings, store, timeout_s=0.1)()  # would time out if it asked the closed ports


def test_the_wait_is_bounded_by_the_setting(tmp_path: Path) -> None:
    settings = load_settings(
        TrainerSettings, environ={"THINKMESH_TRAINER_WAIT_TIMEOUT_S": "0.2"}, policy_target="127.0.0.1:1"
    )
    assert load_settings(TrainerSettings, environ={}).wait_timeout_s == 1800
    with pytest.raises(TimeoutError, match=r"after 0\.2 s .*unreachable"):
        wait_for_current(settings, store_with(tmp_path, 1, 1))()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"THINKMESH_TRAINER_WAIT_FOR": "policy,search"}, "THINKMESH_TRAINER_WAIT_FOR: unknown search"),
        ({"THINKMESH_TRAINER_WAIT_TIMEOUT_S": "0"}, "THINKMESH_TRAINER_WAIT_TIMEOUT_S: must be positive"),
        (
            {
                "THINKMESH_TRAINER_WAIT_FOR": "",
                "THINKMESH_TRAINER_KUBE_NAMESPACE": "ml",
                "THINKMESH_TRAINER_KUBE_POLICY_DEPLOYMENT": "policy",
                "THINKMESH_TRAINER_KUBE_PPM_DEPLOYMENT": "ppm",
            },
            "THINKMESH_TRAINER_WAIT_FOR: a Deployment rollout",
        ),
    ],
)
def test_bad_wait_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(TrainerSettings, environ=env)
