"""The depth of a search queue on the embedded broker: a real Celery app from make_celery on a temporary SQLite
file, tasks sent by name with no worker to take them; the cache in front of a broker, and a broker that fails."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry

from services.search.celery_app import make_celery
from services.search.queue_depth import CachedQueueDepth, SqlaQueueDepth, queue_depth_for
from services.search.service.metrics import QUEUE_DEPTH_NAME, export_queue_depths
from services.search.settings import QUEUES, ROUND_QUEUE, SOLVE_QUEUE, CelerySettings

pytestmark = pytest.mark.timeout(60)


def _settings(tmp_path: Path) -> CelerySettings:
    return CelerySettings(
        broker_url=f"sqla+sqlite:///{tmp_path}/broker.sqlite", result_backend=f"db+sqlite:///{tmp_path}/results.sqlite"
    )


def _send(app: Celery, queue: str, n: int) -> None:
    for i in range(n):
        app.send_task("thinkmesh.solve", args=[{"n": i}], queue=queue)


def test_the_waiting_tasks_of_each_queue_are_counted(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    depth = queue_depth_for(settings, ttl_s=0)
    assert depth is not None
    assert depth.depth(SOLVE_QUEUE) == 0, "before the first task the broker's tables do not exist: nothing waits"
    app = make_celery(settings)
    _send(app, SOLVE_QUEUE, 3)
    _send(app, ROUND_QUEUE, 2)
    assert (depth.depth(SOLVE_QUEUE), depth.depth(ROUND_QUEUE), depth.depth("elsewhere")) == (3, 2, 0)


def test_a_task_a_worker_holds_no_longer_waits(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    app = make_celery(settings)
    _send(app, SOLVE_QUEUE, 2)
    with app.connection_for_read() as connection:
        taken = connection.default_channel.basic_get(SOLVE_QUEUE, no_ack=False)  # delivered, not acknowledged
        assert taken is not None
        assert SqlaQueueDepth(f"sqlite:///{tmp_path}/broker.sqlite").depth(SOLVE_QUEUE) == 1


class _Counting:
    def __init__(self, answer: int | Exception) -> None:
        self.answer, self.reads = answer, 0

    def depth(self, queue: str) -> int:
        self.reads += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_broker_is_read_at_most_once_per_ttl_per_queue() -> None:
    broker = _Counting(7)
    depth = CachedQueueDepth(broker, ttl_s=60)
    assert [depth.depth(SOLVE_QUEUE) for _ in range(100)] == [7] * 100
    assert depth.depth(ROUND_QUEUE) == 7
    assert broker.reads == 2


def test_a_broker_error_is_unknown_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    broker = _Counting(ConnectionError("no route to the broker"))
    depth = CachedQueueDepth(broker, ttl_s=0)
    with caplog.at_level(logging.WARNING, logger="services.search.queue_depth"):
        assert [depth.depth(SOLVE_QUEUE) for _ in range(3)] == [None] * 3
    assert broker.reads == 3
    assert [r.getMessage() for r in caplog.records] == [
        "cannot read the depth of queue solve from the broker: no route to the broker"
    ]
    broker.answer = 4
    assert depth.depth(SOLVE_QUEUE) == 4


def test_a_redis_that_does_not_answer_is_unknown_within_about_a_second() -> None:
    depth = queue_depth_for(CelerySettings(broker_url="redis://127.0.0.1:1/0"), ttl_s=0)
    assert depth is not None and depth.depth(SOLVE_QUEUE) is None


def test_a_broker_it_cannot_read_gives_no_reader() -> None:
    assert queue_depth_for(CelerySettings(broker_url="memory://")) is None


def test_the_gauge_reads_each_queue_at_scrape_time_and_leaves_out_the_unknown(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    app = make_celery(settings)
    registry = CollectorRegistry()
    depth = queue_depth_for(settings, ttl_s=0)
    assert depth is not None
    export_queue_depths(depth, QUEUES, registry)
    _send(app, SOLVE_QUEUE, 2)
    assert registry.get_sample_value(QUEUE_DEPTH_NAME, {"queue": SOLVE_QUEUE}) == 2
    assert registry.get_sample_value(QUEUE_DEPTH_NAME, {"queue": ROUND_QUEUE}) == 0
    _send(app, SOLVE_QUEUE, 1)
    assert registry.get_sample_value(QUEUE_DEPTH_NAME, {"queue": SOLVE_QUEUE}) == 3
    # Registered again (a service restarted in the same process): it replaces the first, and unknown has no sample.
    export_queue_depths(CachedQueueDepth(_Counting(RuntimeError("down"))), QUEUES, registry)
    assert registry.get_sample_value(QUEUE_DEPTH_NAME, {"queue": SOLVE_QUEUE}) is None
