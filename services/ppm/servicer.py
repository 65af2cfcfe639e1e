"""PPMService: protobuf ↔ domain, nothing else."""

from __future__ import annotations

from typing import Any

from services.ppm.core import PPMCore
from services.ppm.scorer import ScoreItem
from thinkmesh.v1 import ppm_pb2, ppm_pb2_grpc


class PPMServicer(ppm_pb2_grpc.PPMServiceServicer):
    def __init__(self, core: PPMCore) -> None:
        self.core = core

    async def ScoreSteps(self, request: ppm_pb2.ScoreStepsRequest, context: Any) -> ppm_pb2.ScoreStepsResponse:
        items = [ScoreItem(item.question, tuple(item.steps)) for item in request.items]
        scores = await self.core.score(items, timeout_s=context.time_remaining())
        return ppm_pb2.ScoreStepsResponse(
            results=[ppm_pb2.StepScores(scores=row) for row in scores.results], model_version=scores.model_version
        )
