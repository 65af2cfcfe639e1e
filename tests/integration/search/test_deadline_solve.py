"""A Solve answers by its deadline with its best so far, on the embedded search tier (SQLite broker and results):
real SearchServices, a real worker, sandbox and PPM servers, and a scripted policy server that slows down.

The policy answers every question at once (0.05 s a call), except a question marked SLOWING: from FAST_S after its
first call on, every call with it takes SLOW_S, far past any deadline here, as a policy does that falls behind.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from grpc import aio

from services.common.store import ModelStore
from services.search.celery_app import make_celery
from services.search.protocol import SOLVE, SolveResult, SolveTask
from services.search.settings import CelerySettings
from support.processes import REPO, THINKMESH, server_process, wait_serving
from support.tiny_models import publish_micro_models
from thinkmesh.v1 import search_pb2, search_pb2_grpc

pytestmark = [pytest.mark.timeout(300), pytest.mark.integration, pytest.mark.slow]

PROBLEM = "Count something for me."
SLOWING = "[slowing]"
FAST_S = 1.2  # a first rollout takes 2 calls, about 0.5 s here; the slow calls begin well before any stop time
SLOW_S = 8.0
DEFAULT_DEADLINE_S = 3.0  # the server default of the second SearchService
ROLLOUTS = 400  # more than any search here can spend: every answer is a partial one

SLOWING_POLICY = f"""
import asyncio, time
from support.policy_server import serve_engine
from support.scripted_policy import EndlessEngine

class Slowing(EndlessEngine):
    first = {{}}  # question -> its first call

    async def generate(self, prompts, params):
        now = time.monotonic()
        slowing = [self.first.setdefault(p.question, now) for p in prompts if {SLOWING!r} in p.question]
        if any(now - first >= {FAST_S} for first in slowing):
            await asyncio.sleep({SLOW_S})
        return await super().generate(prompts, params)

asyncio.run(serve_engine(Slowing(0.05)))
"""


@dataclass
class Tier:
    search: str  # a SearchService with the default deadline_s (600 s)
    search_short_default: str  # one whose default deadline is DEFAULT_DEADLINE_S
    celery: CelerySettings


@pytest.fixture(scope="module")
def tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    root = tmp_path_factory.mktemp("deadline")
    store = ModelStore(root / "store")
    publish_micro_models(store)  # the PPM's
    base = {
        "THINKMESH_STORE": str(store.root),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    with ExitStack() as running:
        addresses = [
            running.enter_context(server_process(argv, {**base, **env}))[1]
            for argv, env in (
                ([THINKMESH, "serve", "sandbox", "--port", "0"], {}),
                ([THINKMESH, "serve", "ppm", "--port", "0"], {"THINKMESH_PPM_DEVICE": "cpu"}),
                ([sys.executable, "-c", SLOWING_POLICY], {"THINKMESH_POLICY_PORT": "0"}),
            )
        ]
        for address in addresses:
            wait_serving(address)
        sandbox, ppm, policy = addresses
        celery = CelerySettings(
            broker_url=f"sqla+sqlite:///{root}/broker.sqlite", result_backend=f"db+sqlite:///{root}/results.sqlite"
        )
        env = {
            **base,
            "THINKMESH_SEARCH_BROKER_URL": celery.broker_url,
            "THINKMESH_SEARCH_RESULT_BACKEND": celery.result_backend,
            "THINKMESH_SEARCH_POLICY_TARGET": policy,
            "THINKMESH_SEARCH_PPM_TARGET": ppm,
            "THINKMESH_SEARCH_SANDBOX_TARGET": sandbox,
            "THINKMESH_SEARCH_MAX_ROLLOUTS": str(ROLLOUTS),
        }
        search = running.enter_context(server_process([THINKMESH, "serve", "search", "--port", "0"], env))[1]
        short = running.enter_context(
            server_process(
                [THINKMESH, "serve", "search", "--port", "0"],
                {**env, "THINKMESH_SEARCH_DEFAULT_DEADLINE_S": str(DEFAULT_DEADLINE_S)},
            )
        )[1]
        worker = subprocess.Popen(
            [THINKMESH, "worker"], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            # The worker's first search builds its runtime (channels, grader): not part of any test's time.
            asyncio.run(_solve(search, PROBLEM, rollouts=2, timeout=120))
            yield Tier(search, short, celery)
        finally:
            worker.terminate()
            worker.wait(timeout=60)


async def _solve(
    target: str, problem: str, *, rollouts: int = ROLLOUTS, timeout: float | None = None
) -> search_pb2.SolveResponse:
    async with aio.insecure_channel(target) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        return await stub.Solve(search_pb2.SolveRequest(problem=problem, rollouts=rollouts), timeout=timeout)


def _slowing(name: str) -> str:
    return f"{PROBLEM} {SLOWING} {name} {time.time_ns()}"


async def test_a_solve_answers_by_its_deadline_with_its_best_so_far_when_the_policy_falls_behind(tier: Tier) -> None:
    started = time.monotonic()
    reply = await _solve(tier.search, _slowing("deadline"), timeout=3)
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 3
    assert reply.answer != "" and reply.answer in {str(k) for k in range(7)} and "\\boxed{" in reply.solution
    assert 0 < reply.stats.rollouts < ROLLOUTS and reply.stopped_early  # a partial answer, and it says so


async def test_a_solve_without_a_client_deadline_ends_by_the_servers_default(tier: Tier) -> None:
    started = time.monotonic()
    reply = await asyncio.wait_for(_solve(tier.search_short_default, _slowing("no deadline")), 30)
    assert time.monotonic() - started < DEFAULT_DEADLINE_S + 0.25
    assert reply.answer != "" and 0 < reply.stats.rollouts < ROLLOUTS and reply.stopped_early


async def test_concurrent_solves_all_answer_by_their_deadline(tier: Tier) -> None:
    deadline = 10.0
    outcomes = await asyncio.gather(
        *(_timed(_solve(tier.search, f"{PROBLEM} {k}", timeout=deadline)) for k in range(30)),
        return_exceptions=True,
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, [f"{e.code()}: {e.details()}" if isinstance(e, aio.AioRpcError) else e for e in errors]
    for elapsed, reply in outcomes:  # type: ignore[misc]  # no exceptions among them
        # Each stopped at its stop time with its best so far (empty if it had none): OK, before the deadline.
        assert elapsed < deadline and reply.stats.rollouts < ROLLOUTS


async def _timed(call: Awaitable[search_pb2.SolveResponse]) -> tuple[float, search_pb2.SolveResponse]:
    started = time.monotonic()
    reply = await call
    return time.monotonic() - started, reply


def test_a_task_that_reaches_a_worker_after_its_stop_time_is_dropped_unsearched(tier: Tier) -> None:
    app = make_celery(tier.celery)
    late = SolveTask(_slowing("late"), rollouts=4, deadline=time.time() - 1)
    started = time.monotonic()
    result = SolveResult.from_json(app.send_task(SOLVE, args=[late.to_json()]).get(timeout=60))
    assert not result.searched and result.stopped_early and result.answer == ""
    assert result.stats["rollouts"] == 0 and time.monotonic() - started < 10
