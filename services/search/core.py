"""The SearchService's core: validates a Solve, sends it to the workers as a Celery task, follows it.

It knows nothing of gRPC. Deadlines: the search is told to stop a little before the caller's deadline, so the
best answer found so far arrives in time. A caller that goes away cancels its search.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from celery import Celery

from services.common.errors import DeadlineExceeded, InvalidInput, Overloaded, ThinkmeshError
from services.search.settings import SearchSettings
from services.search.tasks import SOLVE, cancel_key

# Time kept back from the caller's deadline for the result's way back: a share of it, at least a second (the worker
# looks at its deadline between ticks, and one tick on a busy CPU can take most of a second), at most half of it.
_RESULT_MARGIN = 0.15
_RESULT_MARGIN_MIN_S = 1.0
_MIN_BUDGET_S = 0.15  # less than this is refused outright
_POLL_S = 0.05


def _search_time(budget: float) -> float:
    return budget - min(max(budget * _RESULT_MARGIN, _RESULT_MARGIN_MIN_S), budget / 2)


@dataclass(frozen=True)
class SolveRequest:
    problem: str
    rollouts: int = 0
    candidates: int = 0
    max_depth: int = 0
    reference_answer: str = ""
    searches: int = 0


class SearchFailed(ThinkmeshError):
    """The worker could not finish the search (a backend service failed)."""


class SearchCore:
    def __init__(self, settings: SearchSettings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self._running = 0

    def check(self, request: SolveRequest) -> dict[str, Any]:
        s = self.settings
        if not request.problem.strip():
            raise InvalidInput("problem is empty")
        if len(request.problem) > s.max_problem_chars:
            raise InvalidInput(f"problem is {len(request.problem)} characters; the maximum is {s.max_problem_chars}")
        for name, value, limit in (
            ("rollouts", request.rollouts, s.max_rollouts),
            ("candidates", request.candidates, s.max_candidates),
            ("searches", request.searches, s.max_searches),
            ("max_depth", request.max_depth, 64),
        ):
            if value > limit:
                raise InvalidInput(f"{name}={value} is above this server's maximum of {limit}")
        return {
            "question": request.problem,
            "reference": request.reference_answer or None,
            "rollouts": request.rollouts or s.rollouts,
            "candidates": request.candidates or s.candidates,
            "max_depth": request.max_depth or s.max_depth,
            "searches": request.searches or s.searches,
        }

    async def follow(self, request: SolveRequest, time_left: float | None) -> AsyncIterator[dict[str, Any]]:
        """Progress events (state PROGRESS), then one final event with the result (state SUCCESS)."""
        task = self.check(request)
        if self._running >= self.settings.max_concurrent_solves:
            raise Overloaded(
                f"{self._running} searches are running; the limit is {self.settings.max_concurrent_solves}"
            )
        budget = (
            self.settings.default_deadline_s if time_left is None else min(time_left, self.settings.default_deadline_s)
        )
        if budget <= _MIN_BUDGET_S:
            raise DeadlineExceeded("the deadline leaves no time to search")
        job = f"jobs/{uuid.uuid4().hex}"
        task.update(job=job, problem_id="solve", deadline=time.time() + _search_time(budget))
        self._running += 1
        result = self.app.send_task(SOLVE, args=[task])
        finished = False
        try:
            last: Any = None
            while True:
                state, info = await asyncio.to_thread(lambda: (result.state, result.info))
                if state == "SUCCESS":
                    finished = True
                    yield {"state": "SUCCESS", **info}
                    return
                if state in ("FAILURE", "REVOKED"):
                    finished = True
                    raise SearchFailed(f"search failed: {type(info).__name__}: {info}"[:500])
                if state == "PROGRESS" and info != last:
                    last = info
                    yield {"state": "PROGRESS", **info}
                await asyncio.sleep(_POLL_S)
        finally:
            self._running -= 1
            if not finished:  # the caller went away or gave up: stop the search
                await asyncio.to_thread(self.app.backend.store_result, cancel_key(result.id), None, "REVOKED")

    async def solve(self, request: SolveRequest, time_left: float | None) -> dict[str, Any]:
        async for event in self.follow(request, time_left):
            if event["state"] == "SUCCESS":
                return event
        raise SearchFailed("the search ended without a result")
