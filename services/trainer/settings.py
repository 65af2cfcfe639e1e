"""TrainerService settings (THINKMESH_TRAINER_*): its own, and the broker and service targets it shares with the
search tier (the same groups, read under its own prefix)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from services.common.server import ServerSettings
from services.common.settings import require
from services.search.settings import CelerySettings, ServiceTargets
from services.trainer.config import PRESETS, parse_retries
from services.trainer.training.settings import TrainingSettings

# The services a round can wait for (see `wait_for`).
WAITABLE: tuple[str, ...] = ("policy", "ppm")


@dataclass(frozen=True)
class TrainerSettings(ServerSettings):
    SERVICE: ClassVar[str] = "trainer"

    port: int = 50055
    preset: str = "default"
    # Searches again what a round's first search did not solve, e.g. "64:16,128:16" (rollouts:candidates per
    # pass, as the paper's round 4); empty: the preset's (none by default).
    unsolved_retries: str = ""
    # Searches again, in the same form, what a round's first search solved only sometimes (the frontier).
    frontier_retries: str = ""
    # The user's problems instead of the curriculum, and what rounds are evaluated on: a problem file relative to
    # the store's root (the volume the trainer mounts) or, for the evaluation, a dataset name. StartRound may
    # name others per round.
    pool_file: str = ""
    eval_dataset: str = ""
    # A teacher PolicyService ("host:port", e.g. a Deployment of the openai backend with THINKMESH_POLICY_FEW_SHOT)
    # that searches round 1 instead of the user's model.
    teacher_target: str = ""
    # The search tier's broker, as its pods read it (THINKMESH_TRAINER_BROKER_URL, ...).
    celery: CelerySettings = field(default_factory=CelerySettings)
    # A round's searches out on the `round` queue at once: the next problem goes when one finishes, so the queue
    # holds no more than this whatever the pool's size (and the round queue's workers' autoscaler sees it).
    search_in_flight: int = 64
    # The services a round calls: the policy and PPM whose new versions it waits for before its search (their hot
    # reload), and the sandbox its evaluations run the candidates' programs on ("" = an in-process sandbox).
    targets: ServiceTargets = field(default_factory=ServiceTargets)
    # The services whose served version must be the store's current one before a round searches: "policy,ppm",
    # one of them (a policy pinned to a downloaded checkpoint, THINKMESH_POLICY_MODEL=/path, never serves a store
    # version: leave it out), or empty = do not wait. The wait is what holds a round until the new pods of a
    # Kubernetes rollout serve.
    wait_for: tuple[str, ...] = WAITABLE
    # How long that wait may take: a rolling restart of 7B vLLM pods takes minutes per pod.
    wait_timeout_s: float = 1800.0
    # In Kubernetes: roll these Deployments to a new version after publishing (empty = do not). The services then
    # run with THINKMESH_POLICY_RELOAD=off / THINKMESH_PPM_RELOAD=off, so that the running pods do not also reload.
    kube_namespace: str = ""
    kube_policy_deployment: str = ""
    kube_ppm_deployment: str = ""
    # Where a round's SFT and PPM stages train (THINKMESH_TRAINER_TRAINING_*, THINKMESH_TRAINER_JOB_*).
    training: TrainingSettings = field(default_factory=TrainingSettings)

    def validate(self) -> None:
        super().validate()
        require(self.preset in PRESETS, self, "preset", f"must be one of {', '.join(PRESETS)}")
        self.celery.validate(self)
        require(self.search_in_flight > 0, self, "search_in_flight", "must be at least 1")
        self.training.validate(self)
        for name in ("unsolved_retries", "frontier_retries"):
            try:
                parse_retries(getattr(self, name))
            except ValueError as exc:
                require(False, self, name, str(exc))
        unknown = sorted(set(self.wait_for) - set(WAITABLE))
        require(not unknown, self, "wait_for", f"unknown {', '.join(unknown)}: name policy, ppm, both or neither")
        require(self.wait_timeout_s > 0, self, "wait_timeout_s", "must be positive")
        require(
            not self.kube_namespace or bool(self.wait_for),
            self,
            "wait_for",
            "a Deployment rollout (kube_namespace) needs the wait: it is what holds a round until the new pods serve",
        )
        require(
            not self.kube_namespace or bool(self.kube_policy_deployment and self.kube_ppm_deployment),
            self,
            "kube_policy_deployment",
            "set both deployment names together with kube_namespace",
        )
