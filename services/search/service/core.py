"""The SearchService's core: validates a Solve, sends it to the workers as a Celery task, follows it.

It knows nothing of gRPC. Deadlines: every Solve has one, the caller's or at most the server's
`default_deadline_s`. The task carries an absolute stop time a margin before it, where the worker stops searching
(even in the middle of a tick) and answers with its best so far; this core waits until just before the deadline
and then answers with what it has: the worker's result, else the best answer the worker last published as
progress, else an empty answer (stopped early). Only a Solve whose search never began — no worker took it before
its stop time — is DEADLINE_EXCEEDED. A caller that goes away cancels its search. Each state the worker writes
reaches the Solve as an event where the result backend is Redis (task_events.py); elsewhere the Solve polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery

from services.common.errors import DeadlineExceeded, InvalidInput, Overloaded, ThinkmeshError
from services.search.cancellation import CancelRequests
from services.search.protocol import SOLVE, STAT_NAMES, SolveProgress, SolveResult, SolveTask
from services.search.queue_depth import QueueDepth
from services.search.service import metrics
from services.search.service.task_events import RECONCILE_S, TaskEvents, TaskWatch
from services.search.settings import SOLVE_QUEUE, SearchSettings

log = logging.getLogger(__name__)

# Time kept back from the caller's deadline for the result's way back: a share of it, at least a second (the worker
# stops at its stop time even in the middle of a tick, but its result still goes through the result backend, and
# on a busy CPU that can take most of a second), at most half of it.
_RESULT_MARGIN = 0.15
_RESULT_MARGIN_MIN_S = 1.0
# This core answers this long before the caller's deadline (at most a quarter of the time), with whatever it has
# by then: the gRPC reply itself must still arrive in time.
_REPLY_S = 0.25
_MIN_BUDGET_S = 0.15  # less than this is refused outright
_POLL_S = 0.05
_POLL_MAX_S = 0.5  # the result of a search that ends early is late by at most this
_READERS = 4
# Backpressure's retry hint: the queue ahead, drained max_concurrent_solves at a time at the mean Solve latency
# (a running mean, weight _LATENCY_WEIGHT for the newest; this guess until a first Solve ends), within these bounds.
_ASSUMED_SOLVE_S = 10.0
_LATENCY_WEIGHT = 0.1
_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 30.0


def _search_time(budget: float) -> float:
    return budget - min(max(budget * _RESULT_MARGIN, _RESULT_MARGIN_MIN_S), budget / 2)


def _answer_time(budget: float) -> float:
    """When this core answers with what it has, from the start of a Solve with `budget` seconds."""
    return budget - min(_REPLY_S, budget / 4)


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


class _Refused(Exception):
    """Internal: carries a refusal's reason (a metrics label) with the error the caller gets."""

    def __init__(self, reason: str, error: ThinkmeshError) -> None:
        self.reason, self.error = reason, error


class SearchCore:
    def __init__(
        self,
        settings: SearchSettings,
        app: Celery,
        queue_depth: QueueDepth | None = None,
        events: TaskEvents | None = None,
    ) -> None:
        """`queue_depth`: how many tasks wait in the solve queue (for `max_solve_queue`); None: no bound.
        `events`: the task states the result backend publishes (a Redis one); None: each Solve polls its task."""
        self.settings = settings
        self.app = app
        self.queue_depth = queue_depth
        self.events = events
        self.result_reads = 0  # reads of a task's record in the result backend, all Solves together
        self._cancels = CancelRequests(app)
        self._running = 0
        self._mean_solve_s = _ASSUMED_SOLVE_S
        self._reads = asyncio.Semaphore(_READERS)  # reads of the result backend at once
        self._cancelling: set[asyncio.Task[None]] = set()

    def check(self, request: SolveRequest) -> SolveTask:
        """The task for a valid request. The Solve knobs a request leaves at 0 take this service's settings (the
        API's defaults, beside the maxima checked here); the worker fills what is still unset (`with_defaults`)."""
        s = self.settings
        if not request.problem.strip():
            raise InvalidInput("problem is empty")
        for name, text, most in (
            ("problem", request.problem, s.max_problem_chars),
            ("reference_answer", request.reference_answer, s.max_reference_chars),
        ):
            if len(text) > most:
                raise InvalidInput(f"{name} is {len(text)} characters; the maximum is {most}")
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
    ) -> AsyncGenerator[SolveProgress | SolveResult, None]:
        """Progress events while the search runs, then its result: by the Solve's deadline (the caller's, at most
        the server's default), the best found so far."""
        started = time.monotonic()
        outcome = metrics.FAILED
        try:
            try:
                task, budget = await self._admit(request, time_left)
            except _Refused as refused:
                outcome = metrics.REFUSED
                metrics.SOLVE_REFUSALS.labels(refused.reason).inc()
                raise refused.error from None
            self._running += 1  # no await since _admit counted the running searches: the bound holds
            metrics.SOLVES_IN_FLIGHT.inc()
            try:
                async with contextlib.aclosing(self._follow(task, budget, started)) as events:
                    async for event, late in events:
                        if isinstance(event, SolveResult):
                            outcome = metrics.LATE if late else metrics.OK
                        yield event
            finally:
                self._running -= 1
                metrics.SOLVES_IN_FLIGHT.dec()
        except DeadlineExceeded:  # no worker began the search in time (a refusal's outcome is set already)
            if outcome != metrics.REFUSED:
                outcome = metrics.LATE
            raise
        except (GeneratorExit, asyncio.CancelledError):
            outcome = metrics.CANCELLED if outcome == metrics.FAILED else outcome
            raise
        finally:
            elapsed = time.monotonic() - started
            metrics.SOLVE_SECONDS.labels(outcome).observe(elapsed)
            if outcome in (metrics.OK, metrics.LATE):
                self._mean_solve_s += _LATENCY_WEIGHT * (elapsed - self._mean_solve_s)

    async def _admit(self, request: SolveRequest, time_left: float | None) -> tuple[SolveTask, float]:
        """The task and its time budget, or _Refused: nothing is queued for a refused Solve."""
        s = self.settings
        try:
            task = self.check(request)
        except InvalidInput as exc:
            raise _Refused(metrics.INVALID_INPUT, exc) from None
        budget = s.default_deadline_s if time_left is None else min(time_left, s.default_deadline_s)
        if budget <= _MIN_BUDGET_S:
            raise _Refused(metrics.NO_TIME, DeadlineExceeded("the deadline leaves no time to search"))
        if s.max_solve_queue > 0 and self.queue_depth is not None:
            # Off the event loop: a cached value at once, else one read of the broker (a second at most).
            depth = await asyncio.to_thread(self.queue_depth.depth, SOLVE_QUEUE)
            if depth is not None and depth >= s.max_solve_queue:
                retry = self.retry_after(depth)
                error = Overloaded(
                    f"{depth} searches wait in the solve queue (the bound is {s.max_solve_queue}): "
                    f"retry in {retry:.1f} s",
                    retry_after_s=retry,
                )
                raise _Refused(metrics.QUEUE_FULL, error)
        # Last, after the await above: the caller takes its slot before anything else runs.
        if self._running >= s.max_concurrent_solves:
            error = Overloaded(f"{self._running} searches are running; the limit is {s.max_concurrent_solves}")
            raise _Refused(metrics.TOO_MANY_SOLVES, error)
        return task, budget

    def retry_after(self, depth: int) -> float:
        """Seconds until a queue `depth` deep has likely drained enough, within [0.1 s, 30 s]."""
        estimate = depth * self._mean_solve_s / self.settings.max_concurrent_solves
        return min(max(estimate, _RETRY_MIN_S), _RETRY_MAX_S)

    async def _follow(
        self, task: SolveTask, budget: float, started: float
    ) -> AsyncGenerator[tuple[SolveProgress | SolveResult, bool], None]:
        """`follow` once admitted: each event, and whether it is this core's answer to a late result."""
        answer_by = started + _answer_time(budget)
        # No job: an online Solve's result comes back through the result backend and is not kept on the store.
        task = replace(task, deadline=time.time() + _search_time(budget))
        task_id = str(uuid.uuid4())
        with self.events.watch(task_id) if self.events is not None else contextlib.nullcontext() as watch:
            async for event in self._states(task, task_id, watch, answer_by, started):
                yield event

    async def _states(
        self, task: SolveTask, task_id: str, watch: TaskWatch | None, answer_by: float, started: float
    ) -> AsyncGenerator[tuple[SolveProgress | SolveResult, bool], None]:
        # Off the event loop: on the embedded broker a send waits for SQLite's lock, and every other Solve with it.
        # To the app's default queue: `solve` (make_celery).
        result = await asyncio.to_thread(self.app.send_task, SOLVE, args=[task.to_json()], task_id=task_id)
        finished = False
        try:
            state, last = "PENDING", None
            best: SolveProgress | None = None
            # Each state comes as the worker writes it (watch), or from a read of the task's record: one read, so
            # that its state and its payload belong together.
            meta = None if watch is not None else await self._read(result, answer_by)
            while True:
                if meta is not None:
                    state, info = meta["status"], meta["result"]
                    if state == "SUCCESS":
                        finished = True
                        yield _searched(SolveResult.from_json(info)), False
                        return
                    if state in ("FAILURE", "REVOKED"):
                        finished = True
                        raise SearchFailed(f"search failed: {type(info).__name__}: {info}"[:500])
                    if state == "PROGRESS" and info != last:
                        last = info
                        best = SolveProgress.from_json(info)
                        yield best, False
                left = answer_by - time.monotonic()
                if left <= 0:  # the result is late: answer with the best the worker published
                    yield _late_answer(state, best, time.monotonic() - started), True
                    return
                if watch is not None:
                    meta = await watch.next(min(RECONCILE_S, left))
                    if meta is None and time.monotonic() < answer_by:  # heard nothing for a while: look
                        meta = await self._read(result, answer_by)
                else:
                    await asyncio.sleep(min(self._poll_interval(), left))
                    meta = await self._read(result, answer_by)
        finally:
            if not finished:  # the caller went away, or the result is late: stop the search (without waiting)
                self._cancel(result.id)

    def _poll_interval(self) -> float:
        """Between two reads of one Solve's task: the more Solves run, the less often each reads, so the result
        backend serves about as many reads a second however many there are (the embedded one is SQLite, and the
        worker's progress writes wait for its readers)."""
        return min(_POLL_S * max(1.0, self._running / _READERS), _POLL_MAX_S)

    async def _read(self, result: Any, answer_by: float) -> dict[str, Any] | None:
        """The task's record, or None when the result backend has not answered by `answer_by`."""
        self.result_reads += 1
        try:
            async with asyncio.timeout(max(0.0, answer_by - time.monotonic())), self._reads:
                meta: dict[str, Any] = await asyncio.to_thread(result.backend.get_task_meta, result.id)
        except TimeoutError:
            return None
        return meta

    def _cancel(self, task_id: str) -> None:
        """Raise the task's cancel flag in the background: the answer does not wait for it."""
        cancelling = asyncio.create_task(asyncio.to_thread(self._cancels.request, task_id))
        self._cancelling.add(cancelling)
        cancelling.add_done_callback(self._cancelled)

    def _cancelled(self, cancelling: asyncio.Task[None]) -> None:
        self._cancelling.discard(cancelling)
        if not cancelling.cancelled() and cancelling.exception() is not None:
            log.warning("could not cancel a search", exc_info=cancelling.exception())

    async def solve(self, request: SolveRequest, time_left: float | None) -> SolveResult:
        async with contextlib.aclosing(self.follow(request, time_left)) as events:
            async for event in events:
                if isinstance(event, SolveResult):
                    return event
        raise SearchFailed("the search ended without a result")


def _late_answer(state: str, progress: SolveProgress | None, elapsed: float) -> SolveResult:
    """What a Solve whose result is late answers: the best its worker published (an empty answer if it had found
    none yet); DEADLINE_EXCEEDED when no worker had begun the search."""
    if state == "PENDING":
        raise DeadlineExceeded("no answer by the deadline: no worker had begun the search (none was free)")
    rollouts = progress.rollouts_done if progress is not None else 0
    return SolveResult(
        answer=progress.best_answer if progress is not None else "",
        solution=progress.best_solution if progress is not None else "",
        score=progress.best_score if progress is not None else 0.0,
        stats={**dict.fromkeys(STAT_NAMES, 0), "rollouts": rollouts, "wall_ms": int(elapsed * 1000)},
        stopped_early=True,
    )


def _searched(result: SolveResult) -> SolveResult:
    """The worker's result; DEADLINE_EXCEEDED when it dropped the task (it arrived after its stop time)."""
    if not result.searched:
        raise DeadlineExceeded(
            "no answer by the deadline: the search reached a worker only after its stop time (none was free)"
        )
    return result
