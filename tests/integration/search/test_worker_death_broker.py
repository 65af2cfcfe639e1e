"""The embedded broker (kombu's SQLAlchemy transport over SQLite, as services/search/celery_app.py gives it to every
sqla+ URL) keeps a message that a consumer took and never acknowledged: a consumer that dies without a word (here:
os._exit, as SIGKILL) loses nothing, and nothing is delivered twice while its consumer lives."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from kombu import Exchange, Queue
from kombu.connection import Connection

from services.search.celery_app import broker_url_for_kombu, restore_unacknowledged
from services.search.settings import CelerySettings
from support.processes import REPO

QUEUE = Queue("search", Exchange("search"), "search")

# Takes one message and dies without acknowledging it, as a SIGKILLed worker does.
DIES_HOLDING_ONE = """
import os, sys
from kombu import Exchange, Queue
from kombu.connection import Connection
from services.search.celery_app import broker_url_for_kombu
queue = Queue("search", Exchange("search"), "search")
with Connection(broker_url_for_kombu(sys.argv[1])) as connection:
    def die(body, message):
        print(body["n"], flush=True)
        os._exit(9)
    with connection.Consumer(queue, callbacks=[die], prefetch_count=1):
        connection.drain_events(timeout=30)
"""


@contextmanager
def _connection(url: str, visibility_timeout: float) -> Iterator[Any]:
    options = {"visibility_timeout": visibility_timeout, "polling_interval": 0.02}
    with Connection(broker_url_for_kombu(url), transport_options=options) as connection:  # type: ignore[no-untyped-call]
        yield connection


def _publish(url: str, *numbers: int) -> None:
    with _connection(url, 60) as connection:
        producer = connection.Producer()
        for n in numbers:
            producer.publish({"n": n}, exchange=QUEUE.exchange, routing_key="search", declare=[QUEUE])


def _take(connection: Any, timeout: float, ack: bool = True, until: int = 0) -> list[int]:
    """Every message that arrives within `timeout` seconds (or the first `until`)."""
    taken: list[int] = []

    def on_message(body: dict[str, int], message: Any) -> None:
        taken.append(body["n"])
        if ack:
            message.ack()

    with connection.Consumer(QUEUE, callbacks=[on_message], prefetch_count=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (until and len(taken) >= until):
            with suppress(TimeoutError):
                connection.drain_events(timeout=0.2)
    return taken


def _killed_holding_one(url: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", DIES_HOLDING_ONE, url], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 9, done.stderr
    return int(done.stdout)


def _rows(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, visible FROM thinkmesh_message ORDER BY id").fetchall()


def test_a_dead_consumers_message_comes_back_after_the_visibility_timeout(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    _publish(url, 1)
    assert _killed_holding_one(url) == 1
    with _connection(url, visibility_timeout=2) as connection:
        started = time.monotonic()
        assert _take(connection, timeout=1) == [], "redelivered before its visibility timeout"
        assert _take(connection, timeout=5, until=1) == [1]
        print(f"redelivered {time.monotonic() - started:.1f} s after the consumer died (timeout 2 s)")
    assert _rows(tmp_path / "broker.sqlite") == [], "the acknowledged message left the table"


def test_the_local_stack_puts_a_dead_workers_messages_back_at_once(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    _publish(url, 1, 2)
    assert _killed_holding_one(url) == 1
    assert restore_unacknowledged(CelerySettings(broker_url=url)) == 1
    with _connection(url, visibility_timeout=900) as connection:
        assert _take(connection, timeout=5, until=2) == [1, 2], "the restored message goes first, as the oldest"


def test_a_live_consumers_messages_are_not_taken_from_it(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    _publish(url, 1)
    with _connection(url, visibility_timeout=1) as holder:
        assert _take(holder, timeout=0.5, ack=False) == [1]
        time.sleep(1.5)  # past the timeout: its own sweep leaves what it holds alone
        assert _take(holder, timeout=1.5) == []


def test_a_consumer_that_closes_cleanly_requeues_the_same_message_once(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    _publish(url, 1)
    with _connection(url, visibility_timeout=1) as leaver:
        assert _take(leaver, timeout=0.5, ack=False) == [1]
    assert _rows(tmp_path / "broker.sqlite") == [(1, 1)], "the same row, visible again: not a second copy"
    with _connection(url, visibility_timeout=1) as heir:
        assert _take(heir, timeout=5, until=1) == [1]


def test_an_acknowledged_message_is_never_redelivered(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    _publish(url, 1)
    with _connection(url, visibility_timeout=1) as connection:
        assert _take(connection, timeout=0.5) == [1]
    with _connection(url, visibility_timeout=1) as connection:
        assert _take(connection, timeout=2.5) == []
