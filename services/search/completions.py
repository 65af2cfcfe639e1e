"""A round's completions as events: the worker that ends a round problem's task (its result stored, or the task
failed for good) announces it on a channel of the job, and the trainer's dispatcher waits on that channel instead
of looking for result files.

The channel is Redis pub/sub on the result backend's own connection (TLS and password included), so it exists
wherever the result backend is Redis: a cluster. The embedded SQLite backend has no channels; there the dispatcher
looks for result files at its polling interval, as before. Pub/sub delivers to whoever listens at that moment, so
the dispatcher still reconciles now and then (a message sent while it was not subscribed is not lost for good:
the result file is there).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_PREFIX = "thinkmesh-done:"


@dataclass(frozen=True)
class Completion:
    problem_id: str
    failed: str = ""  # why the task failed for good; "" = its result is stored


def _channel(job: str) -> str:
    return _PREFIX + job


def _redis(app: Any) -> Any | None:
    """The result backend's Redis client, or None where the backend is not Redis."""
    from celery.backends.redis import RedisBackend

    backend = app.backend  # per thread: Celery keeps one backend object per thread
    return backend.client if isinstance(backend, RedisBackend) else None


def announce(app: Any, job: str, completion: Completion) -> None:
    """Tell the job's dispatcher (if it listens) that a problem is done; never fails the task that calls it."""
    try:
        client = _redis(app)
        if client is not None:
            client.publish(
                _channel(job), json.dumps({"problem_id": completion.problem_id, "failed": completion.failed})
            )
    except Exception:  # the dispatcher's reconciliation finds the result anyway
        log.warning("could not announce the end of %s/%s", job, completion.problem_id, exc_info=True)


class Completions:
    """The completions of one job, as they are announced; `available` is False without a Redis result backend."""

    def __init__(self, app: Any, job: str) -> None:
        client = _redis(app)
        self._pubsub = None
        if client is not None:
            self._pubsub = client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(_channel(job))

    @property
    def available(self) -> bool:
        return self._pubsub is not None

    def wait(self, timeout_s: float) -> list[Completion]:
        """The completions announced from now until `timeout_s` has passed, returning as soon as one has come (then
        with every other one already waiting); [] when none came."""
        if self._pubsub is None:
            raise RuntimeError("no completion channel: the result backend is not Redis")
        received: list[Completion] = []
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic() if not received else 0.0
            message = self._pubsub.get_message(timeout=max(0.0, left))
            if message is None:
                if received or time.monotonic() >= deadline:
                    return received
                continue
            try:
                body = json.loads(message["data"])
                received.append(Completion(str(body["problem_id"]), str(body.get("failed", ""))))
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed completion message: %r", message.get("data"))

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
