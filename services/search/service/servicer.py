"""SearchService: protobuf ↔ domain, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.search.protocol import SolveResult
from services.search.service.core import SearchCore, SolveRequest
from thinkmesh.v1 import search_pb2, search_pb2_grpc


def _request(message: search_pb2.SolveRequest) -> SolveRequest:
    return SolveRequest(
        problem=message.problem,
        rollouts=message.rollouts,
        candidates=message.candidates,
        max_depth=message.max_depth,
        reference_answer=message.reference_answer,
        searches=message.searches,
    )


def _response(result: SolveResult) -> search_pb2.SolveResponse:
    return search_pb2.SolveResponse(
        answer=result.answer,
        solution=result.solution,
        score=result.score,
        stats=search_pb2.SearchStats(
            **{k: int(result.stats.get(k, 0)) for k in search_pb2.SearchStats.DESCRIPTOR.fields_by_name}
        ),
        policy_version=result.policy_version,
        stopped_early=result.stopped_early,
        ppm_version=result.ppm_version,
    )


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, core: SearchCore) -> None:
        self.core = core

    async def Solve(self, request: search_pb2.SolveRequest, context: Any) -> search_pb2.SolveResponse:
        return _response(await self.core.solve(_request(request), context.time_remaining()))

    async def SolveStream(self, request: search_pb2.SolveRequest, context: Any) -> AsyncIterator[search_pb2.SolveEvent]:
        async for event in self.core.follow(_request(request), context.time_remaining()):
            if isinstance(event, SolveResult):
                rollouts = int(event.stats.get("rollouts", 0))
                yield search_pb2.SolveEvent(
                    rollouts_done=rollouts,
                    rollouts_total=rollouts,
                    best_answer=event.answer,
                    best_score=event.score,
                    done=True,
                    result=_response(event),
                )
            else:
                yield search_pb2.SolveEvent(
                    rollouts_done=event.rollouts_done,
                    rollouts_total=event.rollouts_total,
                    best_answer=event.best_answer,
                    best_score=event.best_score,
                )
