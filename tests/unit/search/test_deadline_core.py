"""A Solve answers by its deadline (the caller's, or the server's default when it set none) with what it has.

A real Celery app on kombu's in-memory broker and cache backend, and a real worker thread running stand-in
search tasks under the solve task's name: one that publishes its best answer so far and then comes back too
late, one that never publishes, one that answers at once; or no worker at all, so the task is never taken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from celery import Celery, Task
from celery.contrib.testing.worker import start_worker

from services.common.errors import DeadlineExceeded, InvalidInput
from services.search.cancellation import CancelRequests
from services.search.protocol import SOLVE, STAT_NAMES, SolveProgress, SolveResult, SolveTask
from services.search.service.core import SearchCore, SolveRequest
from services.search.settings import SearchSettings

MAX_REFERENCE_CHARS = SearchSettings().max_reference_chars
pytestmark = pytest.mark.timeout(60)

LATE = "publishes its best so far, then answers too late"
SILENT = "searches without a word until too late"
QUICK = "answers at once"
BEST = SolveProgress(rollouts_done=3, rollouts_total=16, best_answer="42", best_score=0.5, best_solution="x = 42")


class _Recording(Celery):
    """Remembers every task it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, args: Any = None, *more: Any, **options: Any) -> Any:
        self.sent.append(args[0])
        return super().send_task(name, args, *more, **options)


def _stand_in_solve(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    task = SolveTask.from_json(payload)
    result = SolveResult("7", "the whole search", 0.9, dict.fromkeys(STAT_NAMES, 1), run={"ticks": 1})
    if task.question == QUICK:
        return result.to_json()
    if task.question == LATE:
        self.update_state(task_id=self.request.id, state="PROGRESS", meta=BEST.to_json())
    cancels = CancelRequests(self.app)
    assert task.deadline is not None
    until = task.deadline + 1.5  # its result comes well after the caller's deadline, unless the caller cancels
    while time.time() < until and not cancels.requested(self.request.id):
        time.sleep(0.05)
    return replace(result, stopped_early=True).to_json()


# kombu's in-memory broker is one per process: a queue name of this module's own, which no other module's worker
# consumes (the SearchCore sends to its app's default queue, as make_celery's is `solve`).
QUEUE = "deadline-core"


def _app(name: str, queue: str = QUEUE) -> _Recording:
    """(kombu's in-memory broker is one per process, whatever the URL says: each app has its own queue.)"""
    app = _Recording(name, broker=f"memory://{name}", backend="cache+memory://", set_as_current=False)
    app.conf.update(
        task_track_started=True,
        task_default_queue=queue,
        broker_transport_options={"polling_interval": 0.01},
    )
    app.task(name=SOLVE, bind=True, shared=False)(_stand_in_solve)  # this app alone
    return app


@pytest.fixture(scope="module")
def app() -> Iterator[_Recording]:
    """An app with a worker taking its tasks."""
    app = _app("with-worker")
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, queues=[QUEUE]):
        yield app


def _core(app: Celery, default_deadline_s: float = 600.0) -> SearchCore:
    return SearchCore(SearchSettings(default_deadline_s=default_deadline_s), app)


async def test_a_late_result_is_answered_with_the_best_the_worker_published_by_the_deadline(app: _Recording) -> None:
    started = time.monotonic()
    result = await asyncio.wait_for(_core(app).solve(SolveRequest(LATE), time_left=2.0), 10)
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 2.0
    assert (result.answer, result.solution, result.score) == ("42", "x = 42", 0.5)
    assert result.stopped_early and result.stats["rollouts"] == 3


async def test_a_solve_without_a_client_deadline_ends_by_the_servers_default(app: _Recording) -> None:
    started = time.monotonic()
    result = await asyncio.wait_for(_core(app, default_deadline_s=2.0).solve(SolveRequest(LATE), None), 10)
    assert time.monotonic() - started < 2.0
    assert result.answer == "42" and result.stopped_early
    # The search was told to stop before that, and the answer carries what it had.
    assert app.sent[-1]["deadline"] < time.time()


async def test_a_search_that_had_found_nothing_yet_answers_empty_and_stopped_early(app: _Recording) -> None:
    result = await asyncio.wait_for(_core(app).solve(SolveRequest(SILENT), time_left=1.5), 10)
    assert result.answer == "" and result.stopped_early and result.stats["rollouts"] == 0


async def test_a_finished_search_answers_as_soon_as_its_result_is_there(app: _Recording) -> None:
    started = time.monotonic()
    result = await asyncio.wait_for(_core(app).solve(SolveRequest(QUICK), time_left=10.0), 10)
    assert time.monotonic() - started < 2.0
    assert result.answer == "7" and not result.stopped_early


async def test_the_stream_ends_with_the_partial_answer_by_the_deadline(app: _Recording) -> None:
    started = time.monotonic()
    events = [e async for e in _core(app).follow(SolveRequest(LATE), time_left=2.0)]
    assert time.monotonic() - started < 2.0
    assert events[:-1] == [BEST]
    assert isinstance(events[-1], SolveResult) and events[-1].answer == "42"


async def test_a_solve_nobody_takes_is_deadline_exceeded_by_the_servers_default() -> None:
    core = _core(_app("no-worker", queue="nobody-takes"), default_deadline_s=1.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="no worker had begun the search"):
        await asyncio.wait_for(core.solve(SolveRequest("anything"), None), 10)
    assert time.monotonic() - started < 1.0


async def test_an_oversized_reference_answer_is_refused_before_anything_is_queued() -> None:
    app = _app("refused", queue="refused")
    core = _core(app)
    with pytest.raises(InvalidInput, match="reference_answer"):
        await asyncio.wait_for(core.solve(SolveRequest("x", reference_answer="9" * 10_000_000), 5.0), 10)
    with pytest.raises(InvalidInput, match="reference_answer"):
        core.check(SolveRequest("x", reference_answer="9" * (MAX_REFERENCE_CHARS + 1)))
    assert core.check(SolveRequest("x", reference_answer="9" * MAX_REFERENCE_CHARS)).reference
    assert app.sent == []
