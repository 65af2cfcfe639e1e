"""Fanning a round's searches out to the Celery workers, one `solve` task per problem on the `round` queue, and
collecting them.

Results land in the store under the round (`rounds/<n>/trees/<problem>.json`, written by the workers); a
problem whose result is already there is never searched again, so a trainer restarted mid-round only sends
what is missing. At most `max_in_flight` tasks are out at once (the next goes when one finishes), so a round
of thousands of problems never floods the broker, and the workers' `solve` queue stays short. A problem whose
task failed after its retries is recorded as failed and the round goes on without it (a restarted round tries it
again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.search.protocol import SOLVE, SolveTask
from services.search.results import ResultStore
from services.search.settings import ROUND_QUEUE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchJob:
    job: str  # e.g. rounds/0003/trees
    problems: Sequence[SolveTask]  # each with its problem_id, reference and search knobs; no job yet


@dataclass(frozen=True)
class SearchOutcome:
    results: dict[str, dict[str, Any]]  # problem_id → its stored result
    failed: dict[str, str]  # problem_id → why its task failed (after its retries): no result


class CeleryDispatcher:
    """Waits for the workers' announcements where the result backend is Redis; elsewhere by looking for the result
    files of the tasks out (at most `max_in_flight`), which is cheap, asking the result backend about failures only
    every `failure_check_s`, and only for those tasks. (Reading every finished tree and querying every task's state
    twice a second cost one of the machine's two cores during a round's search.)"""

    def __init__(
        self,
        app: Any,
        store_root: Path,
        *,
        max_in_flight: int = 64,
        poll_s: float = 0.5,
        failure_check_s: float = 5.0,
        reconcile_s: float = 60.0,
        timeout_s: float = 24 * 3600,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.app = app
        self.results = ResultStore(store_root)
        self.store_root = store_root
        self.max_in_flight = max_in_flight
        self.poll_s = poll_s
        self.failure_check_s = failure_check_s
        self.reconcile_s = reconcile_s
        self.timeout_s = timeout_s

    def missing(self, job: SearchJob) -> list[SolveTask]:
        return [p for p in job.problems if not self.results.has(job.job, p.problem_id)]

    def run(self, job: SearchJob, progress: Callable[[int, int], None] | None = None) -> SearchOutcome:
        """Send a task for every problem without a result, `max_in_flight` at a time; wait until every problem
        has a result or has failed.

        With a Redis result backend the workers announce each problem's end on the job's channel
        (services/search/completions.py) and this waits on it; the result files and the tasks' states are read
        only every `reconcile_s`, for an announcement that went unheard. Without one (the embedded SQLite backend)
        it looks for the outstanding problems' result files every `poll_s` and at their states every
        `failure_check_s`."""
        from services.search.completions import Completions

        waiting = [
            replace(problem, job=job.job, store=str(self.store_root), include_trees=True)
            for problem in reversed(self.missing(job))
        ]
        outstanding: dict[str, Any] = {}
        failed: dict[str, str] = {}
        total = len(job.problems)
        deadline = time.monotonic() + self.timeout_s
        completions = Completions(self.app, job.job)  # subscribed before the first task goes
        check_every = self.reconcile_s if completions.available else self.failure_check_s
        next_check = time.monotonic() + check_every
        try:
            while True:
                while waiting and len(outstanding) < self.max_in_flight:
                    task = waiting.pop()
                    outstanding[task.problem_id] = self.app.send_task(SOLVE, args=[task.to_json()], queue=ROUND_QUEUE)
                if progress is not None:
                    progress(total - len(outstanding) - len(waiting), total)
                if not outstanding and not waiting:
                    return SearchOutcome(self.results.job(job.job), failed)
                if time.monotonic() > deadline:
                    left = len(outstanding) + len(waiting)
                    raise TimeoutError(f"{left} searches of {job.job} did not finish in time")
                if completions.available:
                    for done in completions.wait(max(0.0, next_check - time.monotonic())):
                        if done.problem_id not in outstanding:
                            continue  # another job's, or announced twice
                        if done.failed:
                            self._failed(failed, done.problem_id, done.failed)
                            del outstanding[done.problem_id]
                        elif self.results.has(job.job, done.problem_id):
                            del outstanding[done.problem_id]
                else:
                    time.sleep(self.poll_s)
                    outstanding = self._unstored(job, outstanding)
                if time.monotonic() >= next_check:
                    if completions.available:  # an announcement missed (polling has just looked)
                        outstanding = self._unstored(job, outstanding)
                    for problem_id, result in list(outstanding.items()):
                        if result.state == "FAILURE":
                            self._failed(failed, problem_id, f"{type(result.info).__name__}: {result.info}")
                            del outstanding[problem_id]
                    next_check = time.monotonic() + check_every
        finally:
            completions.close()

    def _unstored(self, job: SearchJob, outstanding: dict[str, Any]) -> dict[str, Any]:
        """The outstanding tasks whose problem has no stored result yet."""
        return {p: r for p, r in outstanding.items() if not self.results.has(job.job, p)}

    @staticmethod
    def _failed(failed: dict[str, str], problem_id: str, why: str) -> None:
        failed[problem_id] = why[:500]
        log.warning("the search of %s failed after its retries: %s", problem_id, failed[problem_id])
