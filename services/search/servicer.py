"""SearchService: protobuf ↔ domain, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.search.core import SearchCore, SolveRequest
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


def _response(result: dict[str, Any]) -> search_pb2.SolveResponse:
    stats = result.get("stats", {})
    return search_pb2.SolveResponse(
        answer=result.get("answer", ""),
        solution=result.get("solution", ""),
        score=float(result.get("score", 0.0)),
        stats=search_pb2.SearchStats(
            **{k: int(stats.get(k, 0)) for k in search_pb2.SearchStats.DESCRIPTOR.fields_by_name}
        ),
        policy_version=result.get("policy_version", ""),
        ppm_version=result.get("ppm_version", ""),
    )


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, core: SearchCore) -> None:
        self.core = core

    async def Solve(self, request: search_pb2.SolveRequest, context: Any) -> search_pb2.SolveResponse:
        return _response(await self.core.solve(_request(request), context.time_remaining()))

    async def SolveStream(self, request: search_pb2.SolveRequest, context: Any) -> AsyncIterator[search_pb2.SolveEvent]:
        async for event in self.core.follow(_request(request), context.time_remaining()):
            if event["state"] == "SUCCESS":
                stats = event.get("stats", {})
                yield search_pb2.SolveEvent(
                    rollouts_done=int(stats.get("rollouts", 0)),
                    rollouts_total=int(stats.get("rollouts", 0)),
                    best_answer=event.get("answer", ""),
                    best_score=float(event.get("score", 0.0)),
                    done=True,
                    result=_response(event),
                )
            else:
                yield search_pb2.SolveEvent(
                    rollouts_done=int(event.get("rollouts_done", 0)),
                    rollouts_total=int(event.get("rollouts_total", 0)),
                    best_answer=event.get("best_answer", ""),
                    best_score=float(event.get("best_score", 0.0)),
                )
