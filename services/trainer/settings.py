"""TrainerService settings (THINKMESH_TRAINER_*)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from services.common.server import ServerSettings
from services.common.settings import require
from services.trainer.config import PRESETS, parse_retries


@dataclass(frozen=True)
class TrainerSettings(ServerSettings):
    SERVICE: ClassVar[str] = "trainer"

    port: int = 50055
    preset: str = "default"
    # Searches again what a round's first search did not solve, e.g. "64:16,128:16" (rollouts:candidates per
    # pass, as the paper's round 4); empty: the preset's (none by default).
    unsolved_retries: str = ""
    broker_url: str = "sqla+sqlite:///.thinkmesh/celery-broker.sqlite"
    result_backend: str = "db+sqlite:///.thinkmesh/celery-results.sqlite"
    # The services whose new versions a round waits for before its search (their hot reload).
    policy_target: str = "127.0.0.1:50052"
    ppm_target: str = "127.0.0.1:50053"
    sandbox_target: str = "127.0.0.1:50051"
    client_tls_ca: Path | None = None
    # In Kubernetes: roll these Deployments to a new version after publishing (empty = do not).
    kube_namespace: str = ""
    kube_policy_deployment: str = ""
    kube_ppm_deployment: str = ""

    def validate(self) -> None:
        super().validate()
        require(self.preset in PRESETS, self, "preset", f"must be one of {', '.join(PRESETS)}")
        try:
            parse_retries(self.unsolved_retries)
        except ValueError as exc:
            require(False, self, "unsolved_retries", str(exc))
        require(
            not self.kube_namespace or bool(self.kube_policy_deployment and self.kube_ppm_deployment),
            self,
            "kube_policy_deployment",
            "set both deployment names together with kube_namespace",
        )
