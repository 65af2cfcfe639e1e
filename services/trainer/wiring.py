"""Building a RoundRunner from settings: the Celery dispatcher, waiting for the services to serve the current
versions before a search, the SandboxService the evaluations run programs on, and rolling the Kubernetes
Deployments after a publish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from services.common.channels import open_channel
from services.common.store import ModelStore
from services.search.celery_app import make_celery
from services.search.engine.backends import Runner
from services.search.worker.clients import GrpcRunner
from services.trainer.config import RoundConfig
from services.trainer.dispatch import CeleryDispatcher
from services.trainer.evaluation import OpenSandbox
from services.trainer.rounds import RoundRunner
from services.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


async def _served_versions(settings: TrainerSettings) -> tuple[str, str]:
    from thinkmesh.v1 import policy_pb2, policy_pb2_grpc, ppm_pb2, ppm_pb2_grpc

    tls = settings.targets.client_tls(settings)
    async with (
        open_channel(settings.targets.policy_target, tls=tls) as policy,
        open_channel(settings.targets.ppm_target, tls=tls) as ppm,
    ):
        generated = await policy_pb2_grpc.PolicyServiceStub(policy).GenerateSteps(
            policy_pb2.GenerateStepsRequest(prompts=[policy_pb2.StepPrompt(question="1+1?")], n=1, max_new_tokens=1),
            timeout=60,
        )
        scored = await ppm_pb2_grpc.PPMServiceStub(ppm).ScoreSteps(
            ppm_pb2.ScoreStepsRequest(items=[ppm_pb2.ScoreItem(question="1+1?", steps=["x = 2\n<end_of_step>"])]),
            timeout=60,
        )
    return generated.model_version, scored.model_version


def wait_for_current(settings: TrainerSettings, store: ModelStore, timeout_s: float = 600) -> Callable[[], None]:
    def wait() -> None:
        wanted = (store.current_name("policy"), store.current_name("ppm"))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                served = asyncio.run(_served_versions(settings))
            except Exception as exc:  # a service still starting or reloading
                served = (f"unreachable: {exc}", "")
            if served == wanted:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"services serve {served}, not the store's current {wanted}")
            time.sleep(1.0)

    return wait


def remote_sandbox(settings: TrainerSettings) -> OpenSandbox | None:
    """The SandboxService at `sandbox_target` for the evaluations' programs; None when it is "" (in process)."""
    target = settings.targets.sandbox_target
    if not target:
        return None

    @contextlib.asynccontextmanager
    async def open_sandbox() -> AsyncIterator[Runner]:
        async with open_channel(target, tls=settings.targets.client_tls(settings)) as channel:
            yield GrpcRunner(channel)

    return open_sandbox


def kube_rollout(settings: TrainerSettings) -> Callable[[str, str], None] | None:
    if not settings.kube_namespace:
        return None
    from services.trainer.kube import Rollout, in_cluster_apps

    rollout = Rollout(settings.kube_namespace, settings.kube_policy_deployment, settings.kube_ppm_deployment)

    def roll(policy_version: str, ppm_version: str) -> None:
        rollout.roll(in_cluster_apps(), policy_version, ppm_version)

    return roll


def make_runner_factory(
    settings: TrainerSettings, store: ModelStore, **hooks: object
) -> Callable[[RoundConfig], RoundRunner]:
    dispatcher = CeleryDispatcher(make_celery(settings.celery), store.root)
    before = wait_for_current(settings, store)
    roll = kube_rollout(settings)
    sandbox = remote_sandbox(settings)

    def factory(config: RoundConfig) -> RoundRunner:
        return RoundRunner(
            store,
            config,
            dispatcher,
            before_search=before,
            on_publish=roll,
            sandbox=sandbox,
            **hooks,  # type: ignore[arg-type]
        )

    return factory
