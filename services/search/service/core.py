"""The SearchService's core: validates a Solve, sends it to the workers as a Celery task, follows it.

It knows nothing of gRPC. Deadlines: the search is told to stop a little before the caller's deadline, so the
best answer found so far arrives in time. A caller that goes away cancels its search.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery

from services.common.errors import DeadlineExceeded, InvalidInput, Overloaded, ThinkmeshError
from services.search.cancellation import CancelRequests
from services.search.protocol import SOLVE, SolveProgress, SolveResult, SolveTask
from services.search.settings import SearchSettings

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
        self._cancels = CancelRequests(app)
        self._running = 0

    def check(self, request: SolveRequest) -> SolveTask:
        """The task for a valid request. The Solve knobs a request leaves at 0 take this service's settings (the
        API's defaults, beside the maxima checked here); the worker fills what is still unset (`with_defaults`)."""
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
        return SolveTask(
            question=request.problem,
            reference=request.reference_answer or None,
            rollouts=request.rollouts or s.search.rollouts,
            candidates=request.candidates or s.search.candidates,
            max_depth=request.max_depth or s.search.max_depth,
            searches=request.searches or s.searches,
        )

    async def follow(
        self, request: SolveRequest, time_left: float | None
    ) -> AsyncIterator[SolveProgress | SolveResult]:
        """Progress events while the search runs, then its result."""
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
        # No job: an online Solve's result comes back through the result backend and is not kept on the store.
        task = replace(task, deadline=time.time() + _search_time(budget))
        self._running += 1
        result = self.app.send_task(SOLVE, args=[task.to_json()])
        finished = False
        try:
            last: Any = None
            while True:
                # One read of the task's record: its state and its payload must belong together.
                meta = await asyncio.to_thread(result.backend.get_task_meta, result.id)
                state, info = meta["status"], meta["result"]
                if state == "SUCCESS":
                    finished = True
                    yield SolveResult.from_json(info)
                    return
                if state in ("FAILURE", "REVOKED"):
                    finished = True
                    raise SearchFailed(f"search failed: {type(info).__name__}: {info}"[:500])
                if state == "PROGRESS" and info != last:
                    last = info
                    yield SolveProgress.from_json(info)
                await asyncio.sleep(_POLL_S)
        finally:
            self._running -= 1
            if not finished:  # the caller went away or gave up: stop the search
                await asyncio.to_thread(self._cancels.request, result.id)

    async def solve(self, request: SolveRequest, time_left: float | None) -> SolveResult:
        async for event in self.follow(request, time_left):
            if isinstance(event, SolveResult):
                return event
        raise SearchFailed("the search ended without a result")
