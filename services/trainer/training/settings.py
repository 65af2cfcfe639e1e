"""Where a round's training stages run, as the trainer reads it (THINKMESH_TRAINER_TRAINING_*, _JOB_*)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.common.errors import InvalidInput
from services.common.settings import require
from services.trainer.training.spec import Strategy

# The chart mounts its rendered Job template here (the `<release>-training-job` ConfigMap).
DEFAULT_JOB_TEMPLATE = "/etc/thinkmesh/training/job.yaml"


@dataclass(frozen=True)
class TrainingSettings:
    """`training_mode`: local = in the trainer's own process (one process) or torchrun processes beside it
    (`training_nproc_per_node` > 1), on the trainer's own devices; job = a Kubernetes Job per stage across the GPU
    pool (`job_nodes` pods of `job_gpus_per_node` GPUs each), the trainer itself needing no GPU.

    The strategy fields are the `Strategy` of every stage (see services/trainer/training/spec.py)."""

    training_mode: Literal["local", "job"] = "local"
    training_nproc_per_node: int = 1
    training_fsdp: Literal["auto", "on", "off"] = "auto"
    training_gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    training_attention: str = ""
    training_micro_batch_size: int = 0
    training_group_by_length: bool = False
    training_checkpoint_steps: int = 50
    # job mode: the Job template the chart renders (image, store volume, GPUs, node pool), and the Job's shape.
    # `job_kind`: indexed = a native Indexed Job and a headless Service for the rendezvous (no operator needed);
    # pytorchjob = a Kubeflow PyTorchJob (kubeflow.org/v1; the training operator must be installed).
    job_kind: Literal["indexed", "pytorchjob"] = "indexed"
    job_template: str = DEFAULT_JOB_TEMPLATE
    job_namespace: str = ""
    job_nodes: int = 1
    job_gpus_per_node: int = 1
    # Stage restarts: how many times a stage whose Job failed (any pod's failure fails it: the Job itself retries
    # nothing) is started again as a whole, as a new Job that resumes from the stage's last checkpoint; and how long
    # a stage may run in all, every attempt together, before it is failed.
    job_backoff_limit: int = 3
    job_timeout_s: float = 7 * 24 * 3600.0
    job_rendezvous_port: int = 29500

    def strategy(self) -> Strategy:
        return Strategy(
            fsdp=self.training_fsdp,
            gradient_checkpointing=self.training_gradient_checkpointing,
            attention=self.training_attention,
            micro_batch_size=self.training_micro_batch_size,
            group_by_length=self.training_group_by_length,
            checkpoint_steps=self.training_checkpoint_steps,
        )

    def validate(self, owner: object) -> None:
        require(self.training_nproc_per_node >= 1, owner, "training_nproc_per_node", "must be at least 1")
        require(self.job_nodes >= 1, owner, "job_nodes", "must be at least 1")
        require(self.job_gpus_per_node >= 1, owner, "job_gpus_per_node", "must be at least 1")
        require(self.job_backoff_limit >= 0, owner, "job_backoff_limit", "must be 0 or more")
        require(self.job_timeout_s > 0, owner, "job_timeout_s", "must be positive")
        require(0 < self.job_rendezvous_port < 65536, owner, "job_rendezvous_port", "must be a TCP port")
        require(
            self.training_mode != "job" or bool(self.job_namespace),
            owner,
            "job_namespace",
            "job mode needs the namespace to create the training Jobs in",
        )
        try:
            self.strategy()
        except InvalidInput as exc:
            require(False, owner, "training_attention", str(exc))
