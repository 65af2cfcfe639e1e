"""The solve task and result on the wire: round trips, defaults applied once, bad payloads named."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.common.errors import InvalidInput
from services.search.cancellation import CancelRequests
from services.search.celery_app import make_celery
from services.search.engine.mcts import SearchConfig
from services.search.protocol import SolveProgress, SolveResult, SolveTask
from services.search.settings import CelerySettings, SearchSettings

# What the trainer sent before the protocol had a type: the same dict shape still parses.
ROUND_TASK = {
    "problem_id": "curriculum-L2-0001",
    "question": "What is 2 + 3?",
    "reference": "5",
    "rollouts": 8,
    "candidates": 4,
    "max_depth": 16,
    "q_mode": "terminal",
    "max_code_errors": 2,
    "searches": 1,
    "seed": 3,
    "job": "rounds/0001/trees",
    "store": "/store",
    "include_trees": True,
}


def test_a_task_round_trips_and_reads_the_dicts_producers_sent_before() -> None:
    task = SolveTask.from_json(ROUND_TASK)
    assert (task.problem_id, task.reference, task.q_mode, task.max_code_errors, task.kept) == (
        "curriculum-L2-0001",
        "5",
        "terminal",
        2,
        True,
    )
    assert SolveTask.from_json(task.to_json()) == task
    online = SolveTask.from_json({"question": "q", "reference": None, "rollouts": 0, "deadline": 1_700_000_000})
    assert online.deadline == 1_700_000_000.0 and not online.kept and online.reference is None


def test_defaults_come_from_the_settings_only_where_the_task_left_them_unset() -> None:
    search = SearchConfig(rollouts=16, candidates=4, max_depth=12, q_mode="ppm")
    settings = SearchSettings(search=search, searches=2, answer_method="vote")
    filled = SolveTask("q", rollouts=8).with_defaults(settings)
    assert (filled.rollouts, filled.candidates, filled.max_depth, filled.searches) == (8, 4, 12, 2)
    assert (filled.q_mode, filled.method, filled.max_code_errors, filled.seed) == ("ppm", "vote", 1, 0)
    assert (
        filled.with_defaults(SearchSettings(search=SearchConfig(rollouts=99))) == filled
    )  # applying again changes nothing


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "expected a JSON object"),
        ({"rollouts": 4}, "question is missing"),
        ({"question": "q", "rollouts": "4"}, "rollouts must be int"),
        ({"question": "q", "rollouts": True}, "rollouts must be int"),
        ({"question": "q", "rollouts": -1}, "rollouts must not be negative"),
        ({"question": "q", "q_mode": "best"}, "q_mode must be one of"),
        ({"question": "q", "method": "guess"}, "method must be one of"),
        ({"question": "q", "job": "jobs/x"}, "a job needs a problem_id"),
        ({"question": "q", "rollout": 4}, "unknown field(s) rollout"),
    ],
)
def test_a_bad_task_payload_is_refused_naming_the_field(payload: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match="solve task: ") as caught:
        SolveTask.from_json(payload)
    assert message in str(caught.value)


def test_a_result_round_trips_and_leaves_its_trees_behind_for_the_backend() -> None:
    stored = {
        "job": "rounds/0001/trees",
        "problem_id": "p1",
        "answer": "5",
        "solution": "...",
        "score": 1,
        "stats": {"rollouts": 8, "nodes": 20, "policy_calls": 3, "sandbox_runs": 9, "ppm_calls": 3, "wall_ms": 10},
        "policy_version": "policy-0001",
        "ppm_version": "ppm-0001",
        "stopped_early": False,
        "run": {"ticks": 3},
        "trees": [{"question": "q"}],
    }
    result = SolveResult.from_json(stored)
    assert result.score == 1.0 and result.trees == ({"question": "q"},)
    assert result.to_json() == {**stored, "score": 1.0}
    public = result.without_trees().to_json()
    assert "trees" not in public and public["job"] == "rounds/0001/trees"
    online = SolveResult("5", "...", 0.5, {"rollouts": 1}).to_json()
    assert "job" not in online and "trees" not in online
    with pytest.raises(InvalidInput, match=r"solve result: stats\.tokens"):
        SolveResult.from_json({**stored, "stats": {"tokens": 3}})
    with pytest.raises(InvalidInput, match="solve result: answer is missing"):
        SolveResult.from_json({k: v for k, v in stored.items() if k != "answer"})


def test_progress_round_trips() -> None:
    progress = SolveProgress(rollouts_done=3, rollouts_total=8, best_answer="5", best_score=0.5)
    assert SolveProgress.from_json(progress.to_json()) == progress
    with pytest.raises(InvalidInput, match="solve progress: rollouts_total is missing"):
        SolveProgress.from_json({"rollouts_done": 1})


def test_a_cancel_request_is_a_flag_in_the_sqlite_result_backend(tmp_path: Path) -> None:
    app = make_celery(
        CelerySettings(
            broker_url=f"sqla+sqlite:///{tmp_path}/broker.sqlite",
            result_backend=f"db+sqlite:///{tmp_path}/results.sqlite",
        )
    )
    asking, watching = CancelRequests(app), CancelRequests(app)
    assert not watching.requested("task-1")
    asking.request("task-1")
    asking.request("task-1")  # twice: still one flag
    assert watching.requested("task-1") and not watching.requested("task-2")
    assert app.backend.get_task_meta("task-1")["status"] == "PENDING"  # no task result was written


def test_the_worker_runtime_closes_its_channels_grader_and_loop() -> None:
    from services.search.worker.runtime import WorkerRuntime

    WorkerRuntime._instance = runtime = WorkerRuntime(SearchSettings())  # channels connect lazily: none listens
    channels = list(runtime._channels)
    assert not any(channel._channel.closed() for channel in channels)  # grpc.aio: its C-core channel
    WorkerRuntime.close_shared()  # what the worker's shutdown signal calls
    assert WorkerRuntime._instance is None and runtime.loop.is_closed() and not runtime._thread.is_alive()
    assert all(channel._channel.closed() for channel in channels)
    assert runtime._grader._grader._closed


def test_a_task_may_set_how_the_policy_is_sampled() -> None:
    from services.search.engine.orchestrator import Sampling
    from services.search.worker.runtime import task_sampling

    settings = SearchSettings(sampling=Sampling(temperature=0.8, max_new_tokens=256, exec_timeout_ms=5_000))
    assert task_sampling(SolveTask("q"), settings) is None  # the worker's own
    own = task_sampling(SolveTask("q", temperature=0.0, max_new_tokens=2048), settings)
    assert own == Sampling(temperature=0.0, max_new_tokens=2048, exec_timeout_ms=5_000)
    assert task_sampling(SolveTask("q", max_new_tokens=512), settings) == Sampling(0.8, 512, 5_000)
    task = SolveTask("q", temperature=0.7, max_new_tokens=2048)
    assert SolveTask.from_json(task.to_json()) == task
    with pytest.raises(InvalidInput, match="temperature must be between 0 and 2"):
        SolveTask("q", temperature=3.0)
    with pytest.raises(InvalidInput, match="max_new_tokens must not be negative"):
        SolveTask("q", max_new_tokens=-1)


def test_a_task_searches_no_longer_than_the_time_limit() -> None:
    """Whatever the task's own stop time (none, for a round's), the search stops task_time_limit_s after it
    started: the broker would hand a task still running at its visibility timeout to another worker."""
    import time

    from services.search.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(SearchSettings(task_time_limit_s=30.0))
    deadlines: list[float | None] = []

    class Stop(Exception):
        pass

    async def submit(trees: Any, *, deadline: float | None, **_: Any) -> Any:
        deadlines.append(deadline)
        raise Stop

    try:
        runtime.search_loop = SimpleNamespace(submit=submit)  # type: ignore[assignment]
        for task in (
            SolveTask("q"),
            SolveTask("q", deadline=time.time() + 3600),
            SolveTask("q", deadline=time.time() + 5),
        ):
            with pytest.raises(Stop):
                runtime.solve(task)
    finally:
        runtime.close()
    left = [d - time.monotonic() for d in deadlines if d is not None]
    assert len(left) == 3
    assert 25 < left[0] <= 30 and 25 < left[1] <= 30  # the limit
    assert 0 < left[2] <= 5  # the task's own stop time, sooner


def test_the_time_limit_must_stay_below_the_visibility_timeout() -> None:
    from services.common.errors import ConfigError
    from services.common.settings import load_settings

    with pytest.raises(ConfigError, match="THINKMESH_SEARCH_TASK_TIME_LIMIT_S: must be positive and below"):
        load_settings(SearchSettings, {"THINKMESH_SEARCH_TASK_TIME_LIMIT_S": "900"})  # the visibility timeout: 900
    assert load_settings(SearchSettings, {}).time_limit_s == 810  # unset: 90 % of it
    short = load_settings(SearchSettings, {"THINKMESH_SEARCH_VISIBILITY_TIMEOUT_S": "10"})
    assert short.time_limit_s == 9
    with pytest.raises(ConfigError, match="THINKMESH_SEARCH_QUEUES: search: the queues are solve, round"):
        load_settings(SearchSettings, {"THINKMESH_SEARCH_QUEUES": "search"})
    assert load_settings(SearchSettings, {}).queues == ("solve", "round")
