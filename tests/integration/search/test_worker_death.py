"""A worker SIGKILLed in the middle of a task, on the embedded SQLite broker: the task is not lost. Another worker
takes it once the visibility timeout has passed (as on Redis: test_search_system.py), and in the local stack the
supervisor restarts the worker and puts the task back at once. Real sandbox, PPM and policy servers (the policy
scripted, so that a search lasts and terminates predictably)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery.result import AsyncResult

from services.common.store import ModelStore
from services.dev.stack import THINKMESH as STACK_THINKMESH
from services.dev.stack import LocalStack, RestartPolicy
from services.search.celery_app import make_celery
from services.search.protocol import SOLVE, SolveTask
from services.search.results import ResultStore
from services.search.settings import CelerySettings
from support.processes import REPO, THINKMESH, server_process, wait_serving
from support.tiny_models import publish_micro_models

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
PROBLEM = "Count something for me."
ROLLOUTS = 8  # seconds of search with the scripted policy: long enough to be killed in the middle


@dataclass
class Services:
    env: dict[str, str]  # for a worker: the store and the three services
    store: Path


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("services")
    store = ModelStore(root / "store")
    publish_micro_models(store)
    support_path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    base = {"THINKMESH_STORE": str(store.root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": support_path}
    with (
        server_process([THINKMESH, "serve", "sandbox", "--port", "0"], base) as (_, sandbox),
        server_process([THINKMESH, "serve", "ppm", "--port", "0"], {**base, "THINKMESH_PPM_DEVICE": "cpu"}) as (_, ppm),
        server_process([sys.executable, "-m", "support.scripted_policy"], {**base, "THINKMESH_POLICY_PORT": "0"}) as (
            _,
            policy,
        ),
    ):
        for address in (sandbox, ppm, policy):
            wait_serving(address)
        yield Services(
            {
                **base,
                "THINKMESH_SEARCH_POLICY_TARGET": policy,
                "THINKMESH_SEARCH_PPM_TARGET": ppm,
                "THINKMESH_SEARCH_SANDBOX_TARGET": sandbox,
            },
            store.root,
        )


def _broker(tmp_path: Path) -> dict[str, str]:
    return {
        "THINKMESH_SEARCH_BROKER_URL": f"sqla+sqlite:///{tmp_path}/broker.sqlite",
        "THINKMESH_SEARCH_RESULT_BACKEND": f"db+sqlite:///{tmp_path}/results.sqlite",
    }


def _send(env: dict[str, str], store: Path, job: str) -> AsyncResult:
    app = make_celery(
        CelerySettings(
            broker_url=env["THINKMESH_SEARCH_BROKER_URL"], result_backend=env["THINKMESH_SEARCH_RESULT_BACKEND"]
        )
    )
    request = SolveTask(PROBLEM, rollouts=ROLLOUTS, job=job, problem_id="p1", store=str(store)).to_json()
    return app.send_task(SOLVE, args=[request])


def _started(result: AsyncResult, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while result.state not in ("STARTED", "PROGRESS"):
        assert time.monotonic() < deadline, f"task never started ({result.state})"
        time.sleep(0.1)
    time.sleep(1.0)  # well inside the search


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [THINKMESH, "worker"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def _kill(worker: subprocess.Popen[bytes]) -> float:
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    return time.monotonic()


def test_a_killed_workers_task_runs_on_another_worker_after_the_visibility_timeout(
    services: Services, tmp_path: Path
) -> None:
    env = {**services.env, **_broker(tmp_path), "THINKMESH_SEARCH_VISIBILITY_TIMEOUT_S": "20"}
    victim = _worker(env)
    try:
        result = _send(env, services.store, "jobs/death-test")
        _started(result)
        killed = _kill(victim)
        assert ResultStore(services.store).get("jobs/death-test", "p1") is None  # killed before it finished
        heir = _worker(env)
        try:
            outcome = result.get(timeout=120)
            print(f"killed → result: {time.monotonic() - killed:.1f} s (visibility timeout 20 s)")
        finally:
            _stop(heir)
    finally:
        _stop(victim)
    assert outcome["stats"]["rollouts"] == ROLLOUTS
    stored = ResultStore(services.store).job("jobs/death-test")
    assert list(stored) == ["p1"] and stored["p1"]["answer"] == outcome["answer"]


def test_the_stack_restarts_a_killed_worker_and_its_task_runs_again_at_once(services: Services, tmp_path: Path) -> None:
    """The default visibility timeout (15 min) is far past the bound: the supervisor put the task back."""
    said: list[str] = []
    stack = LocalStack(tmp_path, announce=said.append, restart_policy=RestartPolicy(first_backoff_s=0.5))
    (tmp_path / "logs").mkdir()
    env = {**os.environ, **services.env, **_broker(tmp_path)}
    try:
        worker = stack._spawn(
            "worker",
            [*STACK_THINKMESH, "worker"],
            env,
            listens=False,
            before_restart=stack._requeue_worker_tasks(env),
        )
        stack._supervise()
        result = _send(env, services.store, "jobs/stack-death-test")
        _started(result)
        victim = worker.process.pid
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        assert ResultStore(services.store).get("jobs/stack-death-test", "p1") is None
        outcome = result.get(timeout=90)
        took = time.monotonic() - killed
        print(f"killed → result: {took:.1f} s; {said}")
    finally:
        stack.stop(grace=10)
    assert worker.process.pid != victim
    assert any(f"worker (pid {victim}) was killed by SIGKILL" in line for line in said)
    assert "!! 1 unfinished task(s) of a dead worker put back in the queue" in said
    assert outcome["stats"]["rollouts"] == ROLLOUTS
    assert list(ResultStore(services.store).job("jobs/stack-death-test")) == ["p1"]
