"""Building a RoundRunner from settings: the Celery dispatcher, waiting for the services to serve the current
versions before a search, the SandboxService the evaluations run programs on, and rolling the Kubernetes
Deployments after a publish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from grpc import aio

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
from services.trainer.training.launch import Launcher, LocalLauncher

log = logging.getLogger(__name__)


# Calls per service in one check. Behind a headless Service each call reaches one pod (round-robin over the
# connected ones), so a check asks a few times and every answer must name the store's current version. It is a
# good sign, not a proof: pods beyond the first PROBES, or not yet connected when the check runs, go unseen.
PROBES = 3


async def _policy_version(channel: aio.Channel) -> str:
    from thinkmesh.v1 import policy_pb2, policy_pb2_grpc

    generated = await policy_pb2_grpc.PolicyServiceStub(channel).GenerateSteps(
        policy_pb2.GenerateStepsRequest(prompts=[policy_pb2.StepPrompt(question="1+1?")], n=1, max_new_tokens=1),
        timeout=60,
    )
    return str(generated.model_version)


async def _ppm_version(channel: aio.Channel) -> str:
    from thinkmesh.v1 import ppm_pb2, ppm_pb2_grpc

    scored = await ppm_pb2_grpc.PPMServiceStub(channel).ScoreSteps(
        ppm_pb2.ScoreStepsRequest(items=[ppm_pb2.ScoreItem(question="1+1?", steps=["x = 2\n<end_of_step>"])]),
        timeout=60,
    )
    return str(scored.model_version)


async def _served_versions(settings: TrainerSettings, services: Sequence[str]) -> dict[str, list[str]]:
    """Every version each service answered with, over PROBES calls."""
    tls = settings.targets.client_tls(settings)
    served: dict[str, list[str]] = {}
    for service in services:
        target, ask = (
            (settings.targets.policy_target, _policy_version)
            if service == "policy"
            else (settings.targets.ppm_target, _ppm_version)
        )
        async with open_channel(target, tls=tls) as channel:
            served[service] = sorted({await ask(channel) for _ in range(PROBES)})
    return served


def wait_for_current(
    settings: TrainerSettings, store: ModelStore, timeout_s: float | None = None
) -> Callable[[], None]:
    """Before a search: wait until the services in `settings.wait_for` serve the store's current versions (their
    reload, or the new pods of a Deployment rollout), for `wait_timeout_s` at most."""
    services = settings.wait_for
    limit = settings.wait_timeout_s if timeout_s is None else timeout_s

    def wait() -> None:
        if not services:
            return
        wanted = {service: [str(store.current_name(service))] for service in services}
        deadline = time.monotonic() + limit
        while True:
            try:
                served = asyncio.run(_served_versions(settings, services))
            except Exception as exc:  # a service still starting or reloading
                served = {"unreachable": [str(exc)]}
            if served == wanted:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {limit:g} s the services serve {served}, not the store's current {wanted}")
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
    """After a publish, roll the policy and PPM Deployments (when `kube_namespace` is set): the new pods load the
    store's current versions at start. The running pods must not reload by themselves as well (THINKMESH_POLICY_RELOAD
    and THINKMESH_PPM_RELOAD `off`), and `wait_for_current` holds the next search until the new pods serve."""
    if not settings.kube_namespace:
        return None
    from services.trainer.kube import Rollout, in_cluster_apps

    rollout = Rollout(settings.kube_namespace, settings.kube_policy_deployment, settings.kube_ppm_deployment)

    def roll(policy_version: str, ppm_version: str) -> None:
        rollout.roll(in_cluster_apps(), policy_version, ppm_version)

    return roll


def training_launcher(settings: TrainerSettings) -> Launcher:
    """Where a round's SFT and PPM stages train: beside the trainer (`training_mode` local: this process, or
    `training_nproc_per_node` torchrun processes), or as a Kubernetes Job per stage (job)."""
    training = settings.training
    if training.training_mode == "job":
        from services.trainer.training.jobs import KubeJobLauncher

        return KubeJobLauncher(training)
    return LocalLauncher(training.training_nproc_per_node)


def make_runner_factory(
    settings: TrainerSettings, store: ModelStore, **hooks: object
) -> Callable[[RoundConfig], RoundRunner]:
    dispatcher = CeleryDispatcher(make_celery(settings.celery), store.root, max_in_flight=settings.search_in_flight)
    before = wait_for_current(settings, store)
    roll = kube_rollout(settings)
    sandbox = remote_sandbox(settings)
    launcher = training_launcher(settings)

    def factory(config: RoundConfig) -> RoundRunner:
        return RoundRunner(
            store,
            config,
            dispatcher,
            before_search=before,
            on_publish=roll,
            sandbox=sandbox,
            launcher=launcher,
            strategy=settings.training.strategy(),
            **hooks,  # type: ignore[arg-type]
        )

    return factory
