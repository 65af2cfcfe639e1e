"""TrainerService: protobuf ↔ domain, nothing else."""

from __future__ import annotations

from typing import Any

from services.trainer.core import TrainerCore
from thinkmesh.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc

_STATES = {
    "running": trainer_pb2.ROUND_STATE_RUNNING,
    "succeeded": trainer_pb2.ROUND_STATE_SUCCEEDED,
    "failed": trainer_pb2.ROUND_STATE_FAILED,
    "rejected": trainer_pb2.ROUND_STATE_REJECTED,
}
_KINDS = {common_pb2.MODEL_KIND_POLICY: "policy", common_pb2.MODEL_KIND_PPM: "ppm"}
_KIND_ENUM = {v: k for k, v in _KINDS.items()}


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, core: TrainerCore) -> None:
        self.core = core

    async def StartRound(self, request: trainer_pb2.StartRoundRequest, context: Any) -> trainer_pb2.StartRoundResponse:
        number = self.core.start_round(
            request.pool_size,
            request.rollouts,
            request.candidates,
            pool_file=request.pool_file,
            eval_dataset=request.eval_dataset,
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
            stage=state.stage,
            problems_done=state.problems_done,
            problems_total=state.problems_total,
            metrics=metrics,
            policy_version=state.policy_version,
            ppm_version=state.ppm_version,
            message=state.message,
        )

    async def ListModels(self, request: trainer_pb2.ListModelsRequest, context: Any) -> trainer_pb2.ListModelsResponse:
        listed = self.core.list_models(_KINDS.get(request.kind))
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
