"""Fanning a round's searches out to the Celery workers, one `solve` task per problem, and collecting them.

Results land in the store under the round (`rounds/<n>/trees/<problem>.json`, written by the workers); a
problem whose result is already there is never searched again, so a trainer restarted mid-round only sends
what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.search.protocol import SOLVE, SolveTask
from services.search.results import ResultStore


@dataclass(frozen=True)
class SearchJob:
    job: str  # e.g. rounds/0003/trees
    problems: Sequence[SolveTask]  # each with its problem_id, reference and search knobs; no job yet


class CeleryDispatcher:
    """Waits by looking for result files, which is cheap; asks the result backend about failures only every
    `failure_check_s`, and only for the tasks still outstanding. (Reading every finished tree and querying every
    task's state twice a second cost one of the machine's two cores during a round's search.)"""

    def __init__(
        self,
        app: Any,
        store_root: Path,
        *,
        poll_s: float = 0.5,
        failure_check_s: float = 5.0,
        timeout_s: float = 24 * 3600,
    ) -> None:
        self.app = app
        self.results = ResultStore(store_root)
        self.store_root = store_root
        self.poll_s = poll_s
        self.failure_check_s = failure_check_s
        self.timeout_s = timeout_s

    def missing(self, job: SearchJob) -> list[SolveTask]:
        return [p for p in job.problems if not self.results.has(job.job, p.problem_id)]

    def run(self, job: SearchJob, progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, Any]]:
        """Send a task for every problem without a result; wait until every problem has one."""
        outstanding = {}
        for problem in self.missing(job):
            task = replace(problem, job=job.job, store=str(self.store_root), include_trees=True)
            outstanding[problem.problem_id] = self.app.send_task(SOLVE, args=[task.to_json()])
        total = len(job.problems)
        deadline = time.monotonic() + self.timeout_s
        next_failure_check = time.monotonic() + self.failure_check_s
        while True:
            outstanding = {p: r for p, r in outstanding.items() if not self.results.has(job.job, p)}
            if progress is not None:
                progress(total - len(outstanding), total)
            if not outstanding:
                return self.results.job(job.job)
            if time.monotonic() >= next_failure_check:
                for problem_id, result in outstanding.items():
                    if result.state == "FAILURE":
                        raise RuntimeError(f"search of {problem_id} failed: {result.info}")
                next_failure_check = time.monotonic() + self.failure_check_s
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(outstanding)} searches of {job.job} did not finish in time")
            time.sleep(self.poll_s)
