"""A real `thinkmesh worker` on a real Redis answers its probes: ready once consuming, unready as soon as the broker
goes, stale once its consumer loop has stopped turning (stuck reconnecting, or stuck on a broker that stopped
answering), ready again after a reconnect, and unready (then gone) after SIGTERM.

Measured on the 2-core dev machine (THINKMESH_SEARCH_HEALTH_STALE_S=5): ready 1.6–2.7 s after the start; /readyz
503 within 0.07 s of Redis stopping (the hub sees the socket close); /livez 503 5.0 s after it (the threshold); ready
again at Celery's next connection retry (it retries at 2, 4, 6, … s: 1.1 s after Redis was back here); exit ≈1.5 s
after SIGTERM. A frozen Redis (SIGSTOP: its connections stay open) wedges the consumer at once: both probes 503
5.0 s later, while the connection still counts as up.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import support.redis_server
from services.search.worker.health import HealthReport
from support.processes import THINKMESH
from support.redis_server import free_port, redis_server

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

STALE_S = 5.0  # the least the settings allow


def _probe(port: int, path: str) -> tuple[int, bytes] | None:
    """(status, body), or None when nothing listens or the connection drops."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (ConnectionError, TimeoutError):
        return None
    finally:
        conn.close()


def _wait_for(
    check: Callable[[], bool], within_s: float, what: str, worker: subprocess.Popen[bytes], log: Path
) -> float:
    """Seconds until `check` held; fails after `within_s` or if the worker exits."""
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        assert worker.poll() is None, f"{what}: the worker exited\n{log.read_text()[-3000:]}"
        assert elapsed < within_s, f"{what}: not within {within_s}s\n{log.read_text()[-3000:]}"
        time.sleep(0.05)
    return time.monotonic() - started


def _status(port: int, path: str) -> int | None:
    answer = _probe(port, path)
    return None if answer is None else answer[0]


@contextlib.contextmanager
def _worker(broker_url: str, result_backend: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`thinkmesh worker` with its probes on `port`; killed afterwards if it is still running."""
    env = {
        **os.environ,
        "THINKMESH_SEARCH_BROKER_URL": broker_url,
        "THINKMESH_SEARCH_RESULT_BACKEND": result_backend,
        "THINKMESH_SEARCH_HEALTH_PORT": str(port),
        "THINKMESH_SEARCH_HEALTH_STALE_S": str(STALE_S),
        "THINKMESH_SEARCH_WORKER_CONCURRENCY": "2",
    }
    with log.open("wb") as out:
        worker = subprocess.Popen([THINKMESH, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)


def _stop(worker: subprocess.Popen[bytes], log: Path) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    assert worker.returncode == 0, log.read_text()[-3000:]


def _redis_pid(redis_url: str) -> int:
    """The redis-server this process started for `redis_url` (support.redis_server keeps its process to itself)."""
    port = str(urlsplit(redis_url).port)
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            # Redis rewrites its title ("redis-server 127.0.0.1:PORT"): look for the port anywhere in it.
            title = Path(f"/proc/{entry}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"redis-server" in title and port.encode() in title:
            return int(entry)
    raise AssertionError(f"no redis-server of ours on port {port}")


def test_a_real_worker_reports_ready_stale_and_stopping_through_its_probes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as broker:
        redis_url = broker.enter_context(redis_server(tmp_path))
        with _worker(redis_url, redis_url, port, log) as worker:
            timings["ready after start"] = _wait_for(lambda: _status(port, "/readyz") == 200, 60, "ready", worker, log)
            answer = _probe(port, "/livez")
            assert answer is not None and answer[0] == 200
            report = HealthReport.from_json(answer[1])
            assert report.broker_connected and report.started and report.seconds_since_beat is not None
            assert report.seconds_since_beat < STALE_S
            assert _status(port, "/metrics") == 404

            stopped = time.monotonic()
            broker.close()  # Redis stops: the consumer loses its connection and blocks in Celery's reconnect loop
            _wait_for(lambda: _status(port, "/readyz") == 503, 10, "unready", worker, log)
            timings["unready after the broker stopped"] = time.monotonic() - stopped
            _wait_for(lambda: _status(port, "/livez") == 503, STALE_S + 10, "stale", worker, log)
            timings["stale after the broker stopped"] = time.monotonic() - stopped
            # The last beat came at most one beat interval (STALE_S / 4) before the stop.
            assert timings["stale after the broker stopped"] >= STALE_S * 0.75

            # The same port again (the worker's broker URL names it); Redis allows the rebind at once.
            monkeypatch.setattr(support.redis_server, "free_port", lambda: urlsplit(redis_url).port)
            broker.enter_context(redis_server(tmp_path))
            timings["ready after the broker came back"] = _wait_for(
                lambda: _status(port, "/readyz") == 200, 45, "ready again", worker, log
            )
            assert _status(port, "/livez") == 200

            sent = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            timings["unready after SIGTERM"] = _wait_for(
                lambda: _status(port, "/readyz") in (503, None), 10, "unready after SIGTERM", worker, log
            )
            # From then on: never ready again, until the port closes with the process.
            while worker.poll() is None:
                assert time.monotonic() - sent < 30, f"no exit after SIGTERM\n{log.read_text()[-3000:]}"
                assert _status(port, "/readyz") in (503, None)
                time.sleep(0.05)
            timings["exit after SIGTERM"] = time.monotonic() - sent
            assert worker.returncode == 0, log.read_text()[-3000:]
            assert _status(port, "/readyz") is None
    print(", ".join(f"{what}: {seconds:.2f}s" for what, seconds in timings.items()))


def test_a_broker_that_stops_answering_wedges_the_consumer_and_both_probes_say_so(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    with redis_server(tmp_path) as redis_url, _worker(redis_url, redis_url, port, log) as worker:
        _wait_for(lambda: _status(port, "/readyz") == 200, 60, "ready", worker, log)
        redis = _redis_pid(redis_url)
        frozen = time.monotonic()
        os.kill(redis, signal.SIGSTOP)  # the worker's HTTP thread runs on; its consumer waits on Redis
        try:
            _wait_for(lambda: _status(port, "/livez") == 503, STALE_S + 10, "stale", worker, log)
            stale_after = time.monotonic() - frozen
            answer = _probe(port, "/readyz")
            assert answer is not None and answer[0] == 503
            assert HealthReport.from_json(answer[1]).broker_connected  # nothing told Celery the broker is gone
        finally:
            os.kill(redis, signal.SIGCONT)
        _wait_for(lambda: _status(port, "/readyz") == 200, 30, "ready after the broker thawed", worker, log)
        assert _status(port, "/livez") == 200
        _stop(worker, log)
    print(f"stale {stale_after:.2f}s after the broker froze")


def test_on_the_sqlite_transport_the_blocking_loop_beats_too(tmp_path: Path) -> None:
    """No hub there: the timer thread queues each beat for the consumer's blocking loop, which turns every ≤2 s."""
    port = free_port()
    log = tmp_path / "worker.log"
    broker_url = f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    with _worker(broker_url, f"db+sqlite:///{tmp_path}/results.sqlite", port, log) as worker:
        _wait_for(lambda: _status(port, "/readyz") == 200, 60, "ready", worker, log)
        # Live all through a span longer than the threshold: the beats do arrive.
        until = time.monotonic() + STALE_S + 1
        while time.monotonic() < until:
            assert _status(port, "/livez") == 200, log.read_text()[-3000:]
            time.sleep(0.25)
        _stop(worker, log)
