"""The round's dispatcher: sends only what has no result, on the round queue, a bounded number at a time; waits on
result files; records a failed task and goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    """Stands in for Celery: a sent task 'finishes' (writes its result) a few polls later, unless it fails. Its
    result backend is not Redis: the dispatcher looks for result files (tests/integration/search covers Redis)."""

    backend = None

    def __init__(self, store: ResultStore, failing: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.failing = failing
        self.sent: list[str] = []
        self.queues: set[str] = set()
        self.state_queries = 0
        self.most_out = 0

    def send_task(self, name: str, args: list[dict[str, Any]], queue: str) -> _Task:
        request = args[0]
        self.sent.append(request["problem_id"])
        self.queues.add(queue)
        out = sum(1 for p in self.sent if not self.store.has(JOB, p) and p not in self.failing)
        self.most_out = max(self.most_out, out)
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

    outcome = dispatcher.run(_job(4), progress)
    assert app.sent == ["p1", "p2", "p3"]
    assert app.queues == {"round"}  # never the interactive Solves' queue
    assert outcome.results["p0"] == {"answer": "kept"} and sorted(outcome.results) == ["p0", "p1", "p2", "p3"]
    assert outcome.failed == {}
    assert seen[0] == (1, 4) and seen[-1] == (4, 4)
    assert app.state_queries == 0  # no failure check was due: waiting reads files only


def test_at_most_max_in_flight_tasks_are_out_at_once(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    app = FakeApp(store)
    dispatcher = CeleryDispatcher(app, tmp_path, max_in_flight=3, poll_s=0, failure_check_s=3600)
    outcome = dispatcher.run(_job(10), lambda done, total: app.finish_one())
    assert sorted(outcome.results) == sorted(f"p{i}" for i in range(10))
    assert app.sent == [f"p{i}" for i in range(10)]  # in the pool's order
    assert app.most_out == 3


def test_a_failed_task_is_recorded_and_the_others_finish(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    app = FakeApp(store, failing=frozenset({"p1"}))
    dispatcher = CeleryDispatcher(app, tmp_path, max_in_flight=2, poll_s=0.01, failure_check_s=0.05)
    outcome = dispatcher.run(_job(5), lambda done, total: app.finish_one())
    assert outcome.failed == {"p1": "str: boom"}
    assert sorted(outcome.results) == ["p0", "p2", "p3", "p4"]
    assert app.state_queries > 0
