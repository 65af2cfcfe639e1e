"""A Solve's task states as the worker writes them, without polling.

With a Redis result backend Celery writes each state of a task (PROGRESS while it searches, then SUCCESS or
FAILURE) with SET and PUBLISH together, on a channel named after the task's key. One listener per SearchService
subscribes to all those channels by pattern, on a thread of its own, and hands each state of a task some Solve
watches to that Solve's event loop: a Solve waits on its own queue instead of reading the result backend every
50 ms through a thread. Pub/sub delivers only to a listener connected at that moment, so a Solve still reads its
task's record itself when it has heard nothing for `RECONCILE_S` (a dropped connection, a state written before the
listener had subscribed): events make it prompt, the reads keep it correct. The embedded SQLite backend has no
channels: there a Solve polls, as before (`TaskEvents.for_app` gives None).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

# A Solve that has heard nothing of its task for this long reads the task's record itself.
RECONCILE_S = 1.0
_RECONNECT_S = 1.0
_LISTEN_S = 0.5  # the longest the listener waits for a message before it looks at its stop flag


class TaskWatch:
    """The states of one task, in the order they were written, for the event loop that watches it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._states: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def deliver(self, meta: dict[str, Any]) -> None:
        """From the listener's thread."""
        self._loop.call_soon_threadsafe(self._states.put_nowait, meta)

    async def next(self, timeout_s: float) -> dict[str, Any] | None:
        """The next state written (`status`, `result`, as `backend.get_task_meta` gives them), or None when none
        came within `timeout_s`."""
        try:
            return await asyncio.wait_for(self._states.get(), max(0.0, timeout_s))
        except TimeoutError:
            return None


class TaskEvents:
    def __init__(self, app: Any) -> None:
        self._app = app
        self._watches: dict[str, TaskWatch] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()  # set while the listener is subscribed

    @classmethod
    def for_app(cls, app: Any) -> TaskEvents | None:
        """The events of `app`'s tasks where its result backend is Redis; None elsewhere."""
        from celery.backends.redis import RedisBackend

        return cls(app) if isinstance(app.backend, RedisBackend) else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="task-events", daemon=True)
        self._thread.start()

    @contextmanager
    def watch(self, task_id: str) -> Iterator[TaskWatch]:
        """The states of `task_id` written while the block runs (enter it before the task is sent)."""
        watch = TaskWatch(asyncio.get_running_loop())
        self._watches[task_id] = watch
        try:
            yield watch
        finally:
            self._watches.pop(task_id, None)

    def _listen(self) -> None:
        backend = self._app.backend  # this thread's own (Celery keeps one backend object per thread)
        prefix = _text(backend.task_keyprefix)
        pubsub = None
        while not self._stopping.is_set():
            try:
                if pubsub is None:
                    pubsub = backend.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.psubscribe(prefix + "*")
                    self.subscribed.set()
                message = pubsub.get_message(timeout=_LISTEN_S)
            except Exception:
                log.warning(
                    "the task-event listener lost Redis; Solves read their results until it is back", exc_info=True
                )
                self.subscribed.clear()
                _close(pubsub)
                pubsub = None
                self._stopping.wait(_RECONNECT_S)
                continue
            if message is None or message.get("type") != "pmessage":
                continue
            watch = self._watches.get(_text(message["channel"])[len(prefix) :])
            if watch is None:  # another task: a round's, or a Solve that has stopped listening
                continue
            try:
                meta = backend.meta_from_decoded(backend.decode_result(message["data"]))
            except Exception:
                log.warning("ignored a task state that could not be decoded", exc_info=True)
                continue
            watch.deliver(meta)
        self.subscribed.clear()
        _close(pubsub)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _LISTEN_S + 1)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:
            log.debug("closing the listener's connection failed", exc_info=True)
