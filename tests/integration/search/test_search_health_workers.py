"""The SearchService's gRPC health follows its workers' heartbeats, on the embedded SQLite broker and result
backend: NOT_SERVING before any worker, SERVING while one runs, NOT_SERVING within health_stale_s (plus a check
interval) of the last one's SIGKILL, SERVING again once a new worker beats. The worker needs no sandbox, PPM or
policy server for this: it calls them only once a search runs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.search.heartbeats import interval_s
from support.processes import REPO, THINKMESH, server_process

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]
STALE_S = 5.0  # the smallest health_stale_s the settings allow
# A worker's beat reaches the backend interval_s late at most; the service notices interval_s later at most.
NOTICE_S = STALE_S + 2 * interval_s(STALE_S) + 2.0  # + slack for two busy shared cores
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        "THINKMESH_STORE": str(tmp_path / "store"),
        "HF_HUB_OFFLINE": "1",
        "THINKMESH_SEARCH_BROKER_URL": f"sqla+sqlite:///{tmp_path}/broker.sqlite",
        "THINKMESH_SEARCH_RESULT_BACKEND": f"db+sqlite:///{tmp_path}/results.sqlite",
        "THINKMESH_SEARCH_HEALTH_STALE_S": str(STALE_S),
        # Never dialled: no search runs here.
        "THINKMESH_SEARCH_POLICY_TARGET": "127.0.0.1:9",
        "THINKMESH_SEARCH_PPM_TARGET": "127.0.0.1:9",
        "THINKMESH_SEARCH_SANDBOX_TARGET": "127.0.0.1:9",
    }


@pytest.fixture
def search(env: dict[str, str]) -> Iterator[health_pb2_grpc.HealthStub]:
    with (
        server_process([THINKMESH, "serve", "search", "--port", "0"], env) as (_, address),
        grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel,
    ):
        yield health_pb2_grpc.HealthStub(channel)


def _status(health: health_pb2_grpc.HealthStub) -> int:
    return int(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def _wait_for(health: health_pb2_grpc.HealthStub, status: int, timeout: float) -> float:
    """Seconds until health says `status`; fails after `timeout`."""
    start = time.monotonic()
    while (now := _status(health)) != status:
        elapsed = time.monotonic() - start
        assert elapsed < timeout, f"still {health_pb2.HealthCheckResponse.ServingStatus.Name(now)} after {elapsed:.1f}s"
        time.sleep(0.1)
    return time.monotonic() - start


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [THINKMESH, "worker"], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_health_follows_the_workers_heartbeats(env: dict[str, str], search: health_pb2_grpc.HealthStub) -> None:
    time.sleep(2 * interval_s(STALE_S))
    assert _status(search) == NOT_SERVING  # no worker has ever beaten: a Solve could only time out
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(_worker(env))
        started = _wait_for(search, SERVING, 90)  # the worker's start-up (imports, Celery) included
        print(f"first worker: SERVING {started:.1f} s after its start")
        time.sleep(STALE_S + 1)
        assert _status(search) == SERVING  # its beats keep it fresh

        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        noticed = _wait_for(search, NOT_SERVING, NOTICE_S)
        print(f"NOT_SERVING {noticed:.1f} s after the only worker's SIGKILL (bound {NOTICE_S:.1f} s)")

        workers.append(_worker(env))
        again = _wait_for(search, SERVING, 90)
        print(f"a new worker: SERVING again {again:.1f} s after its start")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=60)
