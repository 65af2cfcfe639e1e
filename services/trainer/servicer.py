"""TrainerService: protobuf ↔ domain, nothing else."""

from __future__ import annotations

from typing import Any

from services.common.errors import InvalidInput
from services.trainer.core import TrainerCore
from services.trainer.rounds.state import RoundRequest
from thinkmesh.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc

# thinkmesh.v1 has no queued state: a queued round is RUNNING, its stage "queued" until its first stage starts.
_STATES = {
    "queued": trainer_pb2.ROUND_STATE_RUNNING,
    "running": trainer_pb2.ROUND_STATE_RUNNING,
    "succeeded": trainer_pb2.ROUND_STATE_SUCCEEDED,
    "failed": trainer_pb2.ROUND_STATE_FAILED,
    "rejected": trainer_pb2.ROUND_STATE_REJECTED,
}
_KINDS = {common_pb2.MODEL_KIND_POLICY: "policy", common_pb2.MODEL_KIND_PPM: "ppm"}
_KIND_ENUM = {v: k for k, v in _KINDS.items()}


def _kind(kind: common_pb2.ModelKind.ValueType) -> str | None:
    """A model kind of a request: its name, or None (UNSPECIFIED: every kind). Proto3 enums are open, so a
    number no kind has arrives as it was sent."""
    if kind == common_pb2.MODEL_KIND_UNSPECIFIED:
        return None
    name = _KINDS.get(kind)
    if name is None:
        known = ", ".join(common_pb2.ModelKind.Name(k) for k in _KINDS)
        raise InvalidInput(f"kind={kind} is not a model kind: {known}, or UNSPECIFIED for every kind")
    return name


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, core: TrainerCore) -> None:
        self.core = core

    async def StartRound(self, request: trainer_pb2.StartRoundRequest, context: Any) -> trainer_pb2.StartRoundResponse:
        number = self.core.start_round(
            RoundRequest(
                pool_size=request.pool_size,
                rollouts=request.rollouts,
                candidates=request.candidates,
                pool_file=request.pool_file,
                eval_dataset=request.eval_dataset,
            )
        )
        return trainer_pb2.StartRoundResponse(round=number)

    async def GetRound(self, request: trainer_pb2.GetRoundRequest, context: Any) -> trainer_pb2.GetRoundResponse:
        state = self.core.get_round(request.round)
        metrics = [
            trainer_pb2.RoundMetric(name=name, value=float(value))
            for name, value in sorted(state.metrics.items())
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        return trainer_pb2.GetRoundResponse(
            round=state.round,
            state=_STATES[state.state],
            stage="queued" if state.state == "queued" else state.stage,
            problems_done=state.problems_done,
            problems_total=state.problems_total,
            metrics=metrics,
            policy_version=state.policy_version,
            ppm_version=state.ppm_version,
            message=state.message,
        )

    async def ListModels(self, request: trainer_pb2.ListModelsRequest, context: Any) -> trainer_pb2.ListModelsResponse:
        listed = self.core.list_models(_kind(request.kind))
        return trainer_pb2.ListModelsResponse(
            models=[
                common_pb2.ModelInfo(
                    kind=_KIND_ENUM[v.kind],
                    version=v.version,
                    current=current,
                    base_model=v.lineage.base_model,
                    round=v.lineage.round,
                    source=v.lineage.source,
                    created_at=v.created_at,
                )
                for v, current in listed
            ]
        )
