"""The depth of a search queue on a real Redis broker, plaintext and TLS (client certificates required): kombu's
list per priority step all count, a task a worker holds does not, and a Redis that goes away is unknown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.search.celery_app import make_celery
from services.search.queue_depth import RedisQueueDepth, queue_depth_for
from services.search.settings import ROUND_QUEUE, SOLVE_QUEUE, CelerySettings
from support.certs import make_certs
from support.redis_server import redis_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CelerySettings]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield CelerySettings(broker_url=url, result_backend=url)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CelerySettings]:
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    with redis_server(tmp_path_factory.mktemp("redis-tls"), tls=certs) as url:
        yield CelerySettings(
            broker_url=url,
            result_backend=url,
            broker_tls_ca=certs.ca,
            broker_tls_cert=certs.client_cert,
            broker_tls_key=certs.client_key,
        )


def test_every_priority_steps_list_counts(plain: CelerySettings) -> None:
    app = make_celery(plain)
    depth = queue_depth_for(plain, ttl_s=0)
    assert depth is not None
    assert depth.depth(SOLVE_QUEUE) == 0
    for priority in (0, 0, 5, 9):  # kombu's lists: solve, solve\x06\x163, solve\x06\x169
        app.send_task("thinkmesh.solve", args=[{}], queue=SOLVE_QUEUE, priority=priority)
    app.send_task("thinkmesh.solve", args=[{}], queue=ROUND_QUEUE)
    keys = set(redis.Redis.from_url(plain.broker_url, decode_responses=True).keys(f"{SOLVE_QUEUE}*"))
    assert keys == {SOLVE_QUEUE, f"{SOLVE_QUEUE}\x06\x163", f"{SOLVE_QUEUE}\x06\x169"}
    assert (depth.depth(SOLVE_QUEUE), depth.depth(ROUND_QUEUE)) == (4, 1)
    with app.connection_for_read() as connection:
        held = connection.default_channel.basic_get(SOLVE_QUEUE, no_ack=False)  # delivered, not acknowledged
        assert held is not None
        assert depth.depth(SOLVE_QUEUE) == 3
        held.ack()
        connection.default_channel.queue_purge(SOLVE_QUEUE)
        connection.default_channel.queue_purge(ROUND_QUEUE)


def test_the_depth_over_tls(tls: CelerySettings) -> None:
    app = make_celery(tls)
    depth = queue_depth_for(tls, ttl_s=0)
    assert depth is not None
    app.send_task("thinkmesh.solve", args=[{}], queue=SOLVE_QUEUE)
    app.send_task("thinkmesh.solve", args=[{}], queue=SOLVE_QUEUE)
    assert depth.depth(SOLVE_QUEUE) == 2


def test_a_redis_that_stops_answering_is_unknown(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        reader = RedisQueueDepth(url)
        assert reader.depth(SOLVE_QUEUE) == 0
        depth = queue_depth_for(CelerySettings(broker_url=url), ttl_s=0)
        assert depth is not None and depth.depth(SOLVE_QUEUE) == 0
    assert depth.depth(SOLVE_QUEUE) is None
