"""Celery tasks: thin, idempotent, acknowledged late.

A task parses its `SolveTask`, drops it when it arrives after its stop time (its caller has stopped waiting),
returns the stored result when its job already solved this problem (a retried or redelivered task of a training
round never searches twice), otherwise hands the search to the worker's runtime
and, when the task names a job, stores the result under that idempotency key. An online Solve names none: its
result goes back through the result backend only, and nothing of it is left on the store. No `.get()` on other
tasks inside a task.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from celery import Celery, Task

from services.common.store import default_root
from services.search.cancellation import CancelRequests
from services.search.completions import Completion, announce
from services.search.protocol import PING, SOLVE, STAT_NAMES, SolveProgress, SolveResult, SolveTask
from services.search.results import ResultStore

log = logging.getLogger(__name__)

_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def ping() -> str:
    """Liveness probe for workers: answers without touching any model or service."""
    return "pong"


def solve(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Search one problem (`SolveTask.to_json()`); returns `SolveResult.to_json()` without the trees."""
    from services.common.settings import load_settings
    from services.search.settings import SearchSettings
    from services.search.worker.runtime import WorkerRuntime

    task = SolveTask.from_json(payload)
    late = _late_by(task)
    if late is not None:  # its caller has stopped waiting: no search, nothing kept
        log.warning("a solve task reached this worker %.1f s after its stop time: dropped unsearched", late)
        return _nothing().to_json()
    results = ResultStore(Path(task.store or default_root())) if task.kept else None
    if results is not None:
        stored = results.get(task.job, task.problem_id)
        if stored is not None:
            announce(self.app, task.job, Completion(task.problem_id))
            return SolveResult.from_json(stored).without_trees().to_json()
    runtime = WorkerRuntime.get(load_settings(SearchSettings))
    task_id = self.request.id
    cancels = CancelRequests(self.app)

    def progress(event: SolveProgress) -> None:
        if task_id:
            self.update_state(task_id=task_id, state="PROGRESS", meta=event.to_json())

    def is_cancelled() -> bool:
        return bool(task_id) and cancels.requested(task_id)

    try:
        result = runtime.solve(task, progress=progress, is_cancelled=is_cancelled)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _TRANSIENT:  # a service starting, draining or overloaded: try again later
            raise self.retry(exc=exc, countdown=min(60, 2 ** (self.request.retries + 1))) from exc
        raise
    if results is None:
        return result.without_trees().to_json()
    # One line per search run to its end, the same for every run of a problem: a problem with two ran twice.
    log.info("searched job=%s problem=%s", task.job, task.problem_id)
    # First copy wins: a task that ran twice returns what the first one stored.
    stored = results.put(task.job, task.problem_id, replace(result, job=task.job, problem_id=task.problem_id).to_json())
    announce(self.app, task.job, Completion(task.problem_id))
    return SolveResult.from_json(stored).without_trees().to_json()


def _late_by(task: SolveTask) -> float | None:
    """How long ago the task's stop time passed (None: it has time left, or no stop time)."""
    if task.deadline is None:
        return None
    late = time.time() - task.deadline
    return late if late >= 0 else None


def _nothing() -> SolveResult:
    """The result of a search that never ran: no answer, stopped early."""
    return SolveResult(answer="", solution="", score=0.0, stats=dict.fromkeys(STAT_NAMES, 0), stopped_early=True)


class _SolveTask(Task):  # type: ignore[misc]
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Failed for good (no retry left): a round's dispatcher hears it at once, and the round goes on."""
        try:
            task = SolveTask.from_json(args[0])
        except Exception:  # a payload that never parsed names no job
            return
        if task.kept:
            announce(self.app, task.job, Completion(task.problem_id, failed=f"{type(exc).__name__}: {exc}"[:500]))


def register_tasks(app: Celery) -> None:
    """Register the tasks on `app` under their names (the names are the wire contract)."""
    # shared=False: on `app` alone (Celery's default also adds them to every app made later in the process).
    app.task(name=PING, shared=False)(ping)
    options = {"base": _SolveTask, "bind": True, "acks_late": True, "reject_on_worker_lost": True, "max_retries": 8}
    app.task(name=SOLVE, shared=False, **options)(solve)
