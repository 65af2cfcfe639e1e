"""The worker's probe endpoint (services/search/worker/health_http.py) over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.errors import ConfigError
from services.search.celery_app import make_celery
from services.search.settings import CelerySettings, SearchSettings
from services.search.worker.health import HealthReport, WorkerHealth
from services.search.worker.health_celery import serve_health
from services.search.worker.health_http import REQUEST_TIMEOUT_S, HealthServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> WorkerHealth:
    return WorkerHealth(stale_after_s=10.0, clock=clock)


@pytest.fixture
def server(health: WorkerHealth) -> Iterator[HealthServer]:
    running = HealthServer(health, "127.0.0.1", 0, max_in_flight=2)
    running.start()
    try:
        yield running
    finally:
        running.close()


def _request(port: int, path: str, method: str = "GET") -> tuple[int, bytes, http.client.HTTPMessage]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def test_the_codes_follow_the_state_and_the_body_says_why(
    server: HealthServer, health: WorkerHealth, clock: FakeClock
) -> None:
    assert _request(server.port, "/readyz")[0] == 503  # not started
    assert _request(server.port, "/livez")[0] == 200  # starting is the startup probe's business

    health.connected()
    health.worker_ready()
    status, body, headers = _request(server.port, "/readyz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert HealthReport.from_json(body) == health.report()

    clock.now += 10.5
    status, body, _ = _request(server.port, "/livez")
    assert status == 503
    assert HealthReport.from_json(body).seconds_since_beat == 10.5
    assert _request(server.port, "/readyz")[0] == 503  # connected, but a loop that does not turn takes no tasks
    health.beat()
    assert _request(server.port, "/livez?probe=kubelet")[0] == 200

    health.disconnected()
    assert _request(server.port, "/readyz")[0] == 503
    health.connected()
    health.shutting_down()
    assert _request(server.port, "/readyz")[0] == 503


def test_unknown_paths_are_404_head_has_no_body_and_other_methods_are_refused(server: HealthServer) -> None:
    assert _request(server.port, "/")[0] == 404
    assert _request(server.port, "/livez/extra")[0] == 404
    status, body, headers = _request(server.port, "/livez", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0
    assert _request(server.port, "/livez", method="POST")[0] == 501


def test_requests_beyond_the_bound_are_dropped_until_a_slot_frees(server: HealthServer) -> None:
    # Two clients that connect and send nothing hold both slots (max_in_flight=2) until their read times out.
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    try:
        time.sleep(0.2)
        with pytest.raises(ConnectionError):
            _request(server.port, "/livez")
        deadline = time.monotonic() + REQUEST_TIMEOUT_S + 5
        while True:
            try:
                assert _request(server.port, "/livez")[0] == 200
                break
            except ConnectionError:  # http.client.RemoteDisconnected is one too
                assert time.monotonic() < deadline, "the idle clients never released their slots"
                time.sleep(0.1)
    finally:
        for sock in idle:
            sock.close()


def test_close_frees_the_port(health: WorkerHealth) -> None:
    running = HealthServer(health, "127.0.0.1", 0)
    running.start()
    port = running.port
    assert _request(port, "/livez")[0] == 200
    running.close()
    with pytest.raises(ConnectionRefusedError):
        _request(port, "/livez")


def test_a_taken_port_fails_the_start_naming_the_variable(health: WorkerHealth, tmp_path: Path) -> None:
    app = make_celery(
        CelerySettings(
            broker_url=f"sqla+sqlite:///{tmp_path}/broker.sqlite",
            result_backend=f"db+sqlite:///{tmp_path}/results.sqlite",
        )
    )
    assert serve_health(app, SearchSettings(health_port=0)) is None
    taken = HealthServer(health, "127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="THINKMESH_SEARCH_HEALTH_PORT"):
            serve_health(app, SearchSettings(health_port=taken.port))
    finally:
        taken.close()
