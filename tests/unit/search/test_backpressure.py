"""Backpressure and the Solve metrics, over real gRPC: a SearchService (the real core, servicer, interceptor and
server) on the embedded SQLite broker from make_celery. While `max_solve_queue` tasks wait in the solve queue a
Solve is RESOURCE_EXHAUSTED with gRPC's retry pushback in its trailing metadata; once a real worker (a thread,
running a stand-in search under the solve task's name) drains the queue, Solves are admitted again, and a client
whose retry policy honours the pushback gets its answer without seeing the refusal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import pytest_asyncio
from celery import Celery
from celery.contrib.testing.worker import start_worker
from grpc import aio
from prometheus_client import REGISTRY

from services.common.errors import DeadlineExceeded, InvalidInput
from services.common.interceptors import RETRY_PUSHBACK_KEY
from services.common.server import GrpcServer, Service, service_name
from services.search.celery_app import make_celery
from services.search.protocol import SOLVE, STAT_NAMES, SolveResult, SolveTask
from services.search.queue_depth import CachedQueueDepth, queue_depth_for
from services.search.service.core import SearchCore, SolveRequest
from services.search.service.servicer import SearchServicer
from services.search.settings import SOLVE_QUEUE, CelerySettings, SearchSettings
from thinkmesh.v1 import search_pb2, search_pb2_grpc

pytestmark = pytest.mark.timeout(120)

BOUND = 3
MAX_CONCURRENT = 16  # with the assumed 10 s a Solve, 3 waiting tasks: a pushback of 3 × 10 / 16 ≈ 1.9 s
SEARCH = service_name(search_pb2, "SearchService")


def _stand_in_solve(payload: dict[str, Any]) -> dict[str, Any]:
    return SolveResult("7", "x = 7", 0.9, dict.fromkeys(STAT_NAMES, 1), run={"ticks": 1}).to_json()


@dataclass
class Tier:
    app: Celery
    core: SearchCore
    address: str
    depth: CachedQueueDepth

    def fill(self, n: int) -> None:
        for _ in range(n):
            self.app.send_task(SOLVE, args=[SolveTask(question="waiting").to_json()], queue=SOLVE_QUEUE)

    @contextlib.contextmanager
    def worker(self) -> Iterator[None]:
        with start_worker(self.app, pool="threads", concurrency=2, perform_ping_check=False, queues=[SOLVE_QUEUE]):
            yield

    async def drained(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.depth.depth(SOLVE_QUEUE) != 0:
            assert time.monotonic() < deadline, "the worker did not drain the solve queue"
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def tier(tmp_path: Path) -> AsyncIterator[Tier]:
    celery = CelerySettings(
        broker_url=f"sqla+sqlite:///{tmp_path}/broker.sqlite", result_backend=f"db+sqlite:///{tmp_path}/results.sqlite"
    )
    settings = SearchSettings(
        host="127.0.0.1", port=0, celery=celery, max_solve_queue=BOUND, max_concurrent_solves=MAX_CONCURRENT
    )
    app = make_celery(celery)
    app.task(name=SOLVE, shared=False)(_stand_in_solve)  # this app alone: not every app made later
    depth = queue_depth_for(celery, ttl_s=0.05)
    assert depth is not None
    core = SearchCore(settings, app, depth)
    servicer = SearchServicer(core)
    server = GrpcServer(
        settings, [Service(SEARCH, lambda s: search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, s))]
    )
    address = await server.start()
    yield Tier(app, core, address, depth)
    await server.stop(0)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _solve(address: str, *options: tuple[str, Any]) -> search_pb2.SolveResponse:
    async with aio.insecure_channel(address, options=list(options)) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        return await stub.Solve(search_pb2.SolveRequest(problem="1 + 6"), timeout=20)


@pytest.mark.slow  # a worker thread starts and stops: a few seconds
async def test_a_full_solve_queue_refuses_with_a_pushback_until_it_drains(tier: Tier) -> None:
    refusals = _sample("thinkmesh_search_solve_refusals_total", reason="queue_full")
    refused = _sample("thinkmesh_search_solve_seconds_count", outcome="refused")
    ok = _sample("thinkmesh_search_solve_seconds_count", outcome="ok")
    tier.fill(BOUND - 1)
    tier.fill(1)
    with pytest.raises(aio.AioRpcError) as failed:
        await _solve(tier.address)
    error = failed.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers: dict[str, Any] = dict(cast(Any, error.trailing_metadata()))
    pushback = trailers[RETRY_PUSHBACK_KEY]
    assert int(pushback) == round(1000 * tier.core.retry_after(BOUND)) == 1875
    assert "3 searches wait in the solve queue (the bound is 3): retry in 1.9 s" in (error.details() or "")
    assert _sample("thinkmesh_search_solve_refusals_total", reason="queue_full") == refusals + 1
    assert _sample("thinkmesh_search_solve_seconds_count", outcome="refused") == refused + 1

    with tier.worker():
        await tier.drained()
        response = await _solve(tier.address)
    assert response.answer == "7"
    assert _sample("thinkmesh_search_solve_seconds_count", outcome="ok") == ok + 1
    assert _sample("thinkmesh_search_solves_in_flight") == 0


@pytest.mark.slow  # a worker thread starts and stops: a few seconds
async def test_a_client_with_a_retry_policy_waits_the_pushback_and_gets_its_answer(tier: Tier) -> None:
    retry = {
        "methodConfig": [
            {
                "name": [{"service": SEARCH}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
    tier.fill(BOUND)
    refusals = _sample("thinkmesh_search_solve_refusals_total", reason="queue_full")
    started = time.monotonic()
    call = asyncio.create_task(
        _solve(tier.address, ("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(retry)))
    )
    while _sample("thinkmesh_search_solve_refusals_total", reason="queue_full") == refusals:
        await asyncio.sleep(0.02)  # the first attempt is refused
    worker = tier.worker()
    await asyncio.to_thread(worker.__enter__)
    try:
        response = await asyncio.wait_for(call, 30)
    finally:
        await asyncio.to_thread(worker.__exit__, None, None, None)
    assert response.answer == "7"
    # It waited as told (≈1.9 s), not the policy's own backoff of at most 0.1 s, which would have spent every
    # attempt before the worker had drained the queue.
    assert time.monotonic() - started >= tier.core.retry_after(BOUND) * 0.9


async def test_unknown_depth_admits_and_a_bound_of_zero_never_reads_the_broker(tier: Tier) -> None:
    class Unreadable:
        reads = 0

        def depth(self, queue: str) -> int:
            self.reads += 1
            raise ConnectionError("the broker is away")

    broker = Unreadable()
    tier.fill(BOUND)
    unknown = SearchCore(tier.core.settings, tier.app, CachedQueueDepth(broker))
    with pytest.raises(DeadlineExceeded):  # admitted: no worker, so nobody begins it by its deadline
        await unknown.solve(SolveRequest("1 + 6"), time_left=0.5)
    assert broker.reads == 1
    unbounded = SearchCore(
        SearchSettings(celery=tier.core.settings.celery, max_solve_queue=0), tier.app, CachedQueueDepth(broker)
    )
    with pytest.raises(DeadlineExceeded):
        await unbounded.solve(SolveRequest("1 + 6"), time_left=0.5)
    assert broker.reads == 1


async def test_the_in_flight_gauge_and_the_late_outcome(tier: Tier) -> None:
    late = _sample("thinkmesh_search_solve_seconds_count", outcome="late")
    in_flight = _sample("thinkmesh_search_solves_in_flight")
    solving = asyncio.create_task(tier.core.solve(SolveRequest("1 + 6"), time_left=1.0))  # no worker: never begun
    await asyncio.sleep(0.3)
    assert _sample("thinkmesh_search_solves_in_flight") == in_flight + 1
    with pytest.raises(DeadlineExceeded, match="no worker had begun the search"):
        await solving
    assert _sample("thinkmesh_search_solves_in_flight") == in_flight
    assert _sample("thinkmesh_search_solve_seconds_count", outcome="late") == late + 1


async def test_each_refusal_reason_is_counted(tier: Tier) -> None:
    def refusals(reason: str) -> float:
        return _sample("thinkmesh_search_solve_refusals_total", reason=reason)

    before = {reason: refusals(reason) for reason in ("invalid_input", "no_time")}
    with pytest.raises(InvalidInput, match="problem is empty"):
        await tier.core.solve(SolveRequest(" "), time_left=5)
    with pytest.raises(DeadlineExceeded, match="leaves no time"):
        await tier.core.solve(SolveRequest("1 + 6"), time_left=0.1)
    assert {reason: refusals(reason) for reason in before} == {r: n + 1 for r, n in before.items()}


def test_the_pushback_is_clamped() -> None:
    core = SearchCore(
        SearchSettings(max_concurrent_solves=64), Celery("clamp", broker="memory://", backend="cache+memory://")
    )
    assert core.retry_after(0) == 0.1
    assert core.retry_after(64) == 10.0  # the assumed 10 s a Solve until one has ended
    assert core.retry_after(10_000) == 30.0
