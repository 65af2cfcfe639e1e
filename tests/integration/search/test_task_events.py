"""A Solve hears its task's states from a real Redis result backend as the worker writes them, instead of reading
the task's record every 50 ms: a real redis-server as broker and backend, a real Celery worker (threads) running a
stand-in search that publishes progress, waits, and answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, Task
from celery.contrib.testing.worker import start_worker

from services.search.celery_app import make_celery
from services.search.protocol import SOLVE, STAT_NAMES, SolveProgress, SolveResult, SolveTask
from services.search.service.core import SearchCore, SolveRequest
from services.search.service.task_events import TaskEvents
from services.search.settings import CelerySettings, SearchSettings
from support.redis_server import redis_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUEUE = "task-events"  # this module's own: no other worker takes its tasks
SEARCH_S = 2.5  # the stand-in search's length: two and a half reconciliation intervals


def _stand_in_solve(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    task = SolveTask.from_json(payload)
    for done in (1, 2):
        progress = SolveProgress(rollouts_done=done, rollouts_total=2, best_answer=str(done), best_score=0.5)
        self.update_state(task_id=self.request.id, state="PROGRESS", meta=progress.to_json())
        time.sleep(SEARCH_S / 2)
    return SolveResult(task.question[-1], "x", 0.9, dict.fromkeys(STAT_NAMES, 1), run={"ticks": 1}).to_json()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Celery]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        app = make_celery(CelerySettings(broker_url=url, result_backend=url))
        app.conf.task_default_queue = QUEUE
        app.task(name=SOLVE, bind=True, shared=False)(_stand_in_solve)
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, queues=[QUEUE]):
            yield app


@pytest.fixture
def events(app: Celery) -> Iterator[TaskEvents]:
    events = TaskEvents.for_app(app)
    assert events is not None
    events.start()
    assert events.subscribed.wait(10)
    yield events
    events.close()


async def follow(core: SearchCore, problem: str) -> tuple[list[SolveProgress], SolveResult]:
    """Every event of one Solve: its progress, then its result."""
    progress: list[SolveProgress] = []
    async for event in core.follow(SolveRequest(problem), time_left=30.0):
        if isinstance(event, SolveResult):
            return progress, event
        progress.append(event)
    raise AssertionError("no result")


async def test_a_solve_hears_each_state_as_written_and_reads_the_record_only_to_reconcile(
    app: Celery, events: TaskEvents
) -> None:
    core = SearchCore(SearchSettings(), app, events=events)
    progress, result = await follow(core, "answer 7")
    assert [p.rollouts_done for p in progress] == [1, 2]
    assert result.answer == "7"
    # Nothing was heard for a whole interval only between the two progress writes and before the result:
    # at most one read per interval of the search, where polling reads every 50 ms.
    assert core.result_reads <= SEARCH_S // 1 + 1, core.result_reads

    polling = SearchCore(SearchSettings(), app)
    progress, result = await follow(polling, "answer 8")
    assert [p.rollouts_done for p in progress] == [1, 2] and result.answer == "8"
    assert polling.result_reads >= 10 * core.result_reads, (polling.result_reads, core.result_reads)


async def test_concurrent_solves_each_hear_only_their_own_task(app: Celery, events: TaskEvents) -> None:
    core = SearchCore(SearchSettings(), app, events=events)
    outcomes = await asyncio.gather(*(follow(core, f"answer {i}") for i in range(4)))
    assert [result.answer for _, result in outcomes] == ["0", "1", "2", "3"]
    assert all([p.rollouts_done for p in progress] == [1, 2] for progress, _ in outcomes)


async def test_a_malformed_state_on_a_watched_channel_is_skipped_and_the_listener_goes_on(
    app: Celery, events: TaskEvents
) -> None:
    client = redis.Redis.from_url(app.conf.result_backend)
    backend = app.backend
    with events.watch("some-task") as watch:
        client.publish(backend.get_key_for_task("some-task").decode(), b"\x00 not a state")
        backend.store_result("some-task", {"rollouts_done": 1}, "PROGRESS")
        state = await watch.next(5)
        assert state is not None and state["status"] == "PROGRESS" and state["result"] == {"rollouts_done": 1}
        assert await watch.next(0.3) is None  # the malformed one was not delivered
    client.close()


def test_the_embedded_backend_has_no_task_events(tmp_path: Path) -> None:
    app = make_celery(
        CelerySettings(
            broker_url=f"sqla+sqlite:///{tmp_path}/b.sqlite", result_backend=f"db+sqlite:///{tmp_path}/r.sqlite"
        )
    )
    assert TaskEvents.for_app(app) is None
