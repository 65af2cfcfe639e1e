"""Where the worker's health facts come from in Celery.

- worker_ready (sent once, from the consumer, just before its event loop first runs): started.
- worker_shutting_down (sent from the SIGTERM/SIGINT handler): shutting down.
- A consumer bootstep started after the task consumer and stopped when the connection is lost (Celery restarts
  the consumer's steps around every reconnect): broker connected or not.
- The same step's beat: a repeating timer entry that hands `beat` to `Consumer.call_soon`, which runs it on the
  consumer's own loop. With Redis the timer is the event loop's (the worker's hub) and call_soon queues on it;
  with the SQLite transport (no hub) the timer is a thread and call_soon queues the beat for the blocking loop's
  next turn. Either way a beat proves the loop that takes tasks from the broker turned, not just that some
  thread is alive. Celery's own heartbeat_sent signal is no substitute: it fires only while task events are
  enabled (`-E`), which this worker does not do.
- The beat also writes the worker's heartbeat to the result backend (`services/search/heartbeats.py`, a few
  seconds apart at most), whether or not the probe endpoint is on: the SearchService's health reads it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_ready, worker_shutting_down

from services.common.errors import ConfigError
from services.common.settings import env_name
from services.search.heartbeats import BeatWriter, Heartbeats, heartbeats_for, interval_s
from services.search.settings import SearchSettings
from services.search.worker.health import WorkerHealth
from services.search.worker.health_http import HealthServer

log = logging.getLogger(__name__)


def consumer_step(health: WorkerHealth, heartbeats: Heartbeats | None = None) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep class bound to `health` and, when given, the `heartbeats` store (Celery instantiates
    steps itself)."""

    class WorkerHealthStep(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types
        name = "thinkmesh.worker_health"
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, c: Any, **kwargs: Any) -> None:
            super().__init__(c, **kwargs)
            self._beats: Any = None

        def start(self, c: Any) -> None:
            health.connected()
            write = None if heartbeats is None else BeatWriter(heartbeats, c.hostname, interval_s(health.stale_after_s))

            def beat() -> None:
                health.beat()
                if write is not None:
                    write()

            self._beats = c.timer.call_repeatedly(health.beat_interval_s, c.call_soon, (beat,))

        def stop(self, c: Any) -> None:
            health.disconnected()
            if self._beats is not None:
                c.timer.cancel(self._beats)  # cancelling twice (asynloop cancels its entries too) is harmless
                self._beats = None

        shutdown = stop

    return WorkerHealthStep


def serve_health(app: Celery, settings: SearchSettings) -> HealthServer | None:
    """Heartbeats in `app`'s result backend (for the SearchService's health) and, with `health_port` set, /livez
    and /readyz on `host` (the metrics endpoint's), all fed by `app`'s worker."""
    health = WorkerHealth(settings.health_stale_s)
    heartbeats = heartbeats_for(app, settings.health_stale_s)
    if settings.health_port == 0:
        if heartbeats is not None:
            app.steps["consumer"].add(consumer_step(health, heartbeats))
        return None
    try:
        server = HealthServer(health, settings.host, settings.health_port)
    except OSError as exc:
        variable = env_name(settings.SERVICE, "health_port")
        raise ConfigError(f"{variable}: cannot listen on {settings.host}:{settings.health_port}: {exc}") from exc
    app.steps["consumer"].add(consumer_step(health, heartbeats))

    def on_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            health.worker_ready()

    def on_shutting_down(**_: Any) -> None:
        health.shutting_down()

    worker_ready.connect(on_ready, weak=False)
    worker_shutting_down.connect(on_shutting_down, weak=False)
    server.start()
    log.info("health on http://%s:%d/livez and /readyz", settings.host, server.port)
    return server
