"""Fanning a round's searches out to the Celery workers, one `solve` task per problem, and collecting them.

Results land in the store under the round (`rounds/<n>/trees/<problem>.json`, written by the workers); a
problem whose result is already there is never searched again, so a trainer restarted mid-round only sends
what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.search.results import ResultStore
from services.search.tasks import SOLVE


@dataclass(frozen=True)
class SearchJob:
    job: str  # e.g. rounds/0003/trees
    problems: Sequence[dict[str, Any]]  # each: problem_id, question, reference, and search knobs


class CeleryDispatcher:
    def __init__(self, app: Any, store_root: Path, *, poll_s: float = 0.5, timeout_s: float = 24 * 3600) -> None:
        self.app = app
        self.results = ResultStore(store_root)
        self.store_root = store_root
        self.poll_s = poll_s
        self.timeout_s = timeout_s

    def missing(self, job: SearchJob) -> list[dict[str, Any]]:
        return [p for p in job.problems if self.results.get(job.job, p["problem_id"]) is None]

    def run(self, job: SearchJob, progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, Any]]:
        """Send a task for every problem without a result; wait until every problem has one."""
        pending = {}
        for problem in self.missing(job):
            request = {**problem, "job": job.job, "store": str(self.store_root), "include_trees": True}
            pending[problem["problem_id"]] = self.app.send_task(SOLVE, args=[request])
        total = len(job.problems)
        deadline = time.monotonic() + self.timeout_s
        while True:
            done = total - len(self.missing(job))
            if progress is not None:
                progress(done, total)
            if done == total:
                return self.results.job(job.job)
            for problem_id, result in pending.items():
                if result.state == "FAILURE":
                    raise RuntimeError(f"search of {problem_id} failed: {result.info}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{total - done} searches of {job.job} did not finish in time")
            time.sleep(self.poll_s)
