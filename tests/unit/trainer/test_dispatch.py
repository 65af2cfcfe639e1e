"""The round's dispatcher: sends only what has no result, waits on result files, reports a failed task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.search.protocol import SolveTask
from services.search.results import ResultStore
from services.trainer.dispatch import CeleryDispatcher, SearchJob

JOB = "rounds/0001/trees"


class _Task:
    def __init__(self, app: FakeApp, problem_id: str) -> None:
        self.app = app
        self.problem_id = problem_id
        self.info = "boom"

    @property
    def state(self) -> str:
        self.app.state_queries += 1
        return "FAILURE" if self.problem_id in self.app.failing else "PENDING"


class FakeApp:
    """Stands in for Celery: a sent task 'finishes' (writes its result) a few polls later, unless it fails."""

    def __init__(self, store: ResultStore, failing: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.failing = failing
        self.sent: list[str] = []
        self.state_queries = 0

    def send_task(self, name: str, args: list[dict[str, Any]]) -> _Task:
        request = args[0]
        self.sent.append(request["problem_id"])
        return _Task(self, request["problem_id"])

    def finish_one(self) -> None:
        for problem_id in self.sent:
            if problem_id not in self.failing and not self.store.has(JOB, problem_id):
                self.store.put(JOB, problem_id, {"answer": problem_id})
                return


def _job(n: int) -> SearchJob:
    return SearchJob(JOB, [SolveTask("q", "1", problem_id=f"p{i}") for i in range(n)])


def test_only_problems_without_results_are_sent_and_all_results_come_back(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.put(JOB, "p0", {"answer": "kept"})
    app = FakeApp(store)
    dispatcher = CeleryDispatcher(app, tmp_path, poll_s=0, failure_check_s=3600)
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        app.finish_one()

    results = dispatcher.run(_job(4), progress)
    assert app.sent == ["p1", "p2", "p3"]
    assert results["p0"] == {"answer": "kept"} and sorted(results) == ["p0", "p1", "p2", "p3"]
    assert seen[0] == (1, 4) and seen[-1] == (4, 4)
    assert app.state_queries == 0  # no failure check was due: waiting reads files only


def test_a_failed_task_stops_the_wait_with_its_error(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    app = FakeApp(store, failing=frozenset({"p1"}))
    dispatcher = CeleryDispatcher(app, tmp_path, poll_s=0.01, failure_check_s=0.05)
    with pytest.raises(RuntimeError, match="search of p1 failed: boom"):
        dispatcher.run(_job(3), lambda done, total: app.finish_one())
    assert app.state_queries > 0
