"""Celery tasks: thin, idempotent, acknowledged late.

A task parses its arguments, returns the stored result when this job already solved this problem (a retried or
redelivered task never searches twice), otherwise hands the search to the worker's runtime and stores the
result under the idempotency key. No `.get()` on other tasks inside a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from celery import Celery

from services.common.store import default_root
from services.search.results import ResultStore

SOLVE = "thinkmesh.solve"
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
PING = "thinkmesh.ping"


def cancel_key(task_id: str) -> str:
    """The result-backend key whose presence asks the task `task_id` to stop (works over Redis and SQLite)."""
    return f"cancel-{task_id}"


def register_tasks(app: Celery) -> None:
    @app.task(name=PING)  # type: ignore[untyped-decorator]
    def ping() -> str:
        """Liveness probe for workers: answers without touching any model or service."""
        return "pong"

    @app.task(  # type: ignore[untyped-decorator]
        name=SOLVE, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=8
    )
    def solve(self: Any, request: dict[str, Any]) -> dict[str, Any]:
        from services.common.settings import load_settings
        from services.search.runtime import WorkerRuntime
        from services.search.settings import SearchSettings

        job, problem = str(request["job"]), str(request["problem_id"])
        results = ResultStore(Path(request.get("store") or default_root()))
        stored = results.get(job, problem)
        if stored is not None:
            return _public(stored)
        runtime = WorkerRuntime.get(load_settings(SearchSettings))
        task_id = self.request.id

        def progress(event: dict[str, Any]) -> None:
            # Called from the runtime's loop thread, where the task's thread-local request is not visible.
            if task_id:
                self.update_state(task_id=task_id, state="PROGRESS", meta=event)

        def is_cancelled() -> bool:
            return bool(task_id) and app.backend.get_task_meta(cancel_key(task_id)).get("status") == "REVOKED"

        try:
            result = runtime.solve(request, progress=progress, is_cancelled=is_cancelled)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _TRANSIENT:  # a service starting, draining or overloaded: try again later
                raise self.retry(exc=exc, countdown=min(60, 2 ** (self.request.retries + 1))) from exc
            raise
        return _public(results.put(job, problem, {"job": job, "problem_id": problem, **result}))


def _public(result: dict[str, Any]) -> dict[str, Any]:
    """What travels through the result backend: everything but the trees (those stay in the store)."""
    return {k: v for k, v in result.items() if k != "trees"}
