"""The search tier end to end: SearchService → Celery over a real Redis → real workers → real sandbox, PPM and
policy servers (the policy scripted so searches last and terminate predictably)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from services.common.store import ModelStore
from services.search.celery_app import make_celery
from services.search.protocol import SOLVE, SolveTask
from services.search.results import ResultStore
from services.search.settings import CelerySettings
from support.processes import REPO, THINKMESH, server_process, wait_serving
from support.redis_server import redis_server
from support.tiny_models import publish_micro_models
from thinkmesh.v1 import search_pb2, search_pb2_grpc

pytestmark = pytest.mark.timeout(600)
PROBLEM = "Count something for me."


class System:
    def __init__(self, env: dict[str, str], search: str, store: Path) -> None:
        self.env = env
        self.search = search
        self.store = store
        self.workers: list[subprocess.Popen[str]] = []

    def start_worker(self) -> subprocess.Popen[str]:
        worker = subprocess.Popen(
            [THINKMESH, "worker"],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen[str]) -> None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("system")
    store = ModelStore(root / "store")
    publish_micro_models(store)
    support_path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    base = {"THINKMESH_STORE": str(store.root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": support_path}
    with (
        redis_server(root) as redis_url,
        server_process([THINKMESH, "serve", "sandbox", "--port", "0"], base) as (_, sandbox),
        server_process([THINKMESH, "serve", "ppm", "--port", "0"], {**base, "THINKMESH_PPM_DEVICE": "cpu"}) as (_, ppm),
        server_process([sys.executable, "-m", "support.scripted_policy"], base) as (_, policy),
    ):
        for address in (sandbox, ppm, policy):
            wait_serving(address)
        env = {
            **base,
            "THINKMESH_SEARCH_BROKER_URL": redis_url,
            "THINKMESH_SEARCH_RESULT_BACKEND": redis_url,
            "THINKMESH_SEARCH_POLICY_TARGET": policy,
            "THINKMESH_SEARCH_PPM_TARGET": ppm,
            "THINKMESH_SEARCH_SANDBOX_TARGET": sandbox,
            "THINKMESH_SEARCH_VISIBILITY_TIMEOUT_S": "20",  # a search stops by 18 s (90 %): none runs twice
            "THINKMESH_SEARCH_MAX_ROLLOUTS": "400",
        }
        with server_process([THINKMESH, "serve", "search", "--port", "0"], env) as (_, search):
            running = System(env, search, store.root)
            running.start_worker()
            try:
                yield running
            finally:
                running.stop_workers()


def _cli(system: System, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [THINKMESH, "solve", "--target", system.search, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **system.env},
    )


def test_solve_answers_with_a_solution_and_stats(system: System) -> None:
    done = _cli(system, "--rollouts", "6", "--json", PROBLEM)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["answer"] != "" and reply["answer"] in {str(k) for k in range(7)}
    assert "\\boxed{" in reply["solution"] and "<output>" in reply["solution"]
    stats = reply["stats"]
    assert stats["rollouts"] == 6 and stats["nodes"] > 6
    assert stats["policy_calls"] > 0 and stats["sandbox_runs"] > 0 and stats["ppm_calls"] > 0
    assert (reply["policy_version"], reply["ppm_version"]) == ("scripted", "v1")
    # An online Solve leaves nothing on the store: its result came back through the result backend.
    assert _online_jobs(system) == []


def _online_jobs(system: System) -> list[str]:
    """Job directories on the store other than the ones the tasks below name."""
    jobs = system.store / "jobs"
    return sorted(p.name for p in jobs.iterdir() if not p.name.endswith("-test")) if jobs.is_dir() else []


def test_eval_against_the_service_grades_each_problem_and_writes_its_result(system: System, tmp_path: Path) -> None:
    dataset = tmp_path / "problems.jsonl"
    dataset.write_text("".join(json.dumps({"id": i, "question": PROBLEM, "answer": "3"}) + "\n" for i in ("a", "b")))
    results = tmp_path / "results.jsonl"
    done = subprocess.run(
        [
            THINKMESH,
            "eval",
            "--dataset",
            str(dataset),
            "--target",
            system.search,
            "--rollouts",
            "4",
            "--json",
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **system.env},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["a", "b"] and summary["n"] == 2
    assert all(row["rollouts"] == 4 and row["answer"] in {str(k) for k in range(7)} for row in rows)
    assert all(row["correct"] == (row["answer"] == "3") for row in rows)
    assert summary["accuracy"] == sum(row["correct"] for row in rows) / 2


@pytest.mark.parametrize(
    ("args", "message"),
    [(("",), "problem is empty"), (("--rollouts", "100000", PROBLEM), "rollouts=100000 is above")],
)
def test_bad_requests_exit_non_zero_with_the_status(system: System, args: tuple[str, ...], message: str) -> None:
    done = _cli(system, *args)
    assert done.returncode != 0
    assert "INVALID_ARGUMENT" in done.stderr and message in done.stderr


async def test_the_deadline_bounds_the_search_and_the_best_so_far_comes_back(system: System) -> None:
    async with aio.insecure_channel(system.search) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        started = time.monotonic()
        reply = await stub.Solve(search_pb2.SolveRequest(problem=PROBLEM, rollouts=400), timeout=4)
        assert time.monotonic() - started < 4
        assert 0 < reply.stats.rollouts < 400


async def test_solve_stream_reports_progress_then_the_result(system: System) -> None:
    async with aio.insecure_channel(system.search) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        # Few rollouts: the whole search stays well inside the task's time limit (18 s) on a loaded machine.
        events = [e async for e in stub.SolveStream(search_pb2.SolveRequest(problem=PROBLEM, rollouts=12), timeout=120)]
    assert events[-1].done and events[-1].result.stats.rollouts == 12
    assert all(not e.done for e in events[:-1])
    assert any(e.rollouts_total == 12 for e in events[:-1]), "no progress event before the result"


async def test_a_cancelled_solve_stops_its_search_early(system: System) -> None:
    app = make_celery(
        CelerySettings(
            broker_url=system.env["THINKMESH_SEARCH_BROKER_URL"],
            result_backend=system.env["THINKMESH_SEARCH_RESULT_BACKEND"],
        )
    )
    marked = f"{PROBLEM} (cancelled {time.time_ns()})"
    async with aio.insecure_channel(system.search) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        call = stub.SolveStream(search_pb2.SolveRequest(problem=marked, rollouts=400), timeout=120)
        async for event in call:
            if event.rollouts_done > 0:
                break
        call.cancel()  # the caller goes away: the SearchService asks the worker to stop
    cancelled_at = time.monotonic()
    outcome = await asyncio.to_thread(_result_of, app, marked, timeout=60)
    assert time.monotonic() - cancelled_at < 30  # the search's own deadline is ~100 s away
    assert outcome["stopped_early"] and 0 < outcome["stats"]["rollouts"] < 400
    assert _online_jobs(system) == []


def _result_of(app: Any, question: str, timeout: float) -> dict[str, Any]:
    """The finished result of the solve task of `question`, found in the Redis result backend."""
    client = app.backend.client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in client.scan_iter("celery-task-meta-*"):
            meta = json.loads(client.get(key) or "{}")
            if meta.get("status") == "SUCCESS" and question in json.dumps(meta.get("args")):
                return dict(meta["result"])
        time.sleep(0.2)
    raise AssertionError(f"no finished task for {question!r}")


def test_a_retried_task_returns_the_stored_result_without_searching_again(system: System) -> None:
    app = make_celery(
        CelerySettings(
            broker_url=system.env["THINKMESH_SEARCH_BROKER_URL"],
            result_backend=system.env["THINKMESH_SEARCH_RESULT_BACKEND"],
        )
    )
    request = SolveTask(PROBLEM, rollouts=4, job="jobs/retry-test", problem_id="p1", store=str(system.store)).to_json()
    first = app.send_task(SOLVE, args=[request]).get(timeout=120)
    second = app.send_task(SOLVE, args=[request]).get(timeout=120)
    assert first == second  # identical to the millisecond: the second one read the stored result
    assert list(ResultStore(system.store).job("jobs/retry-test")) == ["p1"]


def _app(system: System) -> Any:
    return make_celery(
        CelerySettings(
            broker_url=system.env["THINKMESH_SEARCH_BROKER_URL"],
            result_backend=system.env["THINKMESH_SEARCH_RESULT_BACKEND"],
        )
    )


def test_a_rounds_dispatcher_hears_each_problem_end_instead_of_polling(system: System) -> None:
    """On Redis the workers announce each round problem's end: the dispatcher, which would look at files and task
    states only once a minute here, ends as soon as the last search does, failures included."""
    from services.trainer.dispatch import CeleryDispatcher, SearchJob

    problems = [SolveTask(PROBLEM, rollouts=2, problem_id=f"p{i}") for i in range(3)]
    slow = {"poll_s": 60.0, "failure_check_s": 60.0, "reconcile_s": 60.0, "max_in_flight": 2}
    started = time.monotonic()
    outcome = CeleryDispatcher(_app(system), system.store, **slow).run(SearchJob("jobs/announced", problems))
    assert sorted(outcome.results) == ["p0", "p1", "p2"] and outcome.failed == {}
    assert time.monotonic() - started < 50
    # Tasks whose results cannot be stored fail for good once searched: each failure is announced as well.
    unwritable = Path("/proc/thinkmesh-store")
    started = time.monotonic()
    outcome = CeleryDispatcher(_app(system), unwritable, **slow).run(SearchJob("jobs/failing", problems))
    assert sorted(outcome.failed) == ["p0", "p1", "p2"] and outcome.results == {}
    assert all("Error" in why for why in outcome.failed.values()), outcome.failed
    assert time.monotonic() - started < 50


def test_a_task_whose_worker_dies_finishes_on_another_with_nothing_lost_or_doubled(system: System) -> None:
    app = make_celery(
        CelerySettings(
            broker_url=system.env["THINKMESH_SEARCH_BROKER_URL"],
            result_backend=system.env["THINKMESH_SEARCH_RESULT_BACKEND"],
        )
    )
    # Only the victim consumes while the task starts.
    for worker in system.workers:
        if worker.poll() is None:
            system.kill(worker)
    victim = system.start_worker()
    # Long enough to be killed mid-search (1 s in), short enough to finish within the search's 18 s on a slow
    # 2-core machine: 60 rollouts reached only 43–48 there (2026-12-07), and a search cut short is no full result.
    rollouts = 30
    request = SolveTask(
        PROBLEM, rollouts=rollouts, job="jobs/kill-test", problem_id="p1", store=str(system.store)
    ).to_json()
    result = app.send_task(SOLVE, args=[request])
    deadline = time.monotonic() + 120
    while result.state not in ("STARTED", "PROGRESS"):
        assert time.monotonic() < deadline, f"task never started ({result.state})"
        time.sleep(0.1)
    time.sleep(1.0)
    system.kill(victim)
    assert ResultStore(system.store).get("jobs/kill-test", "p1") is None  # killed before it finished
    system.start_worker()  # takes the unacknowledged task once its visibility timeout passes
    outcome = result.get(timeout=300)
    assert outcome["stats"]["rollouts"] == rollouts
    stored = ResultStore(system.store).job("jobs/kill-test")
    assert list(stored) == ["p1"] and stored["p1"]["answer"] == outcome["answer"]


async def test_unknown_method_is_unimplemented_not_a_crash(system: System) -> None:
    async with aio.insecure_channel(system.search) as channel:
        with pytest.raises(aio.AioRpcError) as caught:
            await channel.unary_unary("/thinkmesh.v1.SearchService/Nope")(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    await asyncio.sleep(0)
