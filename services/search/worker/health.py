"""What the worker's probes say: ready to take tasks (/readyz), and its consumer loop still turning (/livez).

Celery reports the facts (`health_celery.py`: the worker's signals and a consumer step that beats from the event
loop) and the probes read them over HTTP (`health_http.py`); this class knows neither, and its clock is
injectable so tests drive time by hand.

    start ──worker_ready──► ready ──connection lost──► not ready (live until the beats are stale)
                              ▲                                   │
                              └──────────── reconnected ◄─────────┘
    ready ──no beat for stale_after_s (the loop is stuck, e.g. on a broker that stopped answering)──► neither
    any state ──SIGTERM (worker_shutting_down)──► not ready, live: draining is not a hang
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

# The consumer beats this often at most (more often when the stale threshold is short), so one late timer tick
# is never mistaken for a hang.
MAX_BEAT_INTERVAL_S = 1.0


@dataclass(frozen=True)
class HealthReport:
    """The body of /livez and /readyz: the verdicts and the facts behind them."""

    ready: bool  # /readyz: 200 or 503
    live: bool  # /livez: 200 or 503
    started: bool  # Celery said worker_ready
    broker_connected: bool
    shutting_down: bool
    seconds_since_beat: float | None  # None before the consumer's first beat

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> HealthReport:
        data: dict[str, Any] = json.loads(text)
        since = data["seconds_since_beat"]
        return cls(
            ready=bool(data["ready"]),
            live=bool(data["live"]),
            started=bool(data["started"]),
            broker_connected=bool(data["broker_connected"]),
            shutting_down=bool(data["shutting_down"]),
            seconds_since_beat=None if since is None else float(since),
        )


class WorkerHealth:
    """The state the probes judge. Thread-safe: Celery's main thread writes it (one write comes from a signal
    handler, hence the re-entrant lock), the HTTP threads read it."""

    def __init__(self, stale_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._lock = threading.RLock()
        self._started = False
        self._connected = False
        self._shutting_down = False
        self._last_beat: float | None = None

    @property
    def beat_interval_s(self) -> float:
        """How often the consumer should beat: several beats fit in the stale threshold."""
        return min(MAX_BEAT_INTERVAL_S, self.stale_after_s / 4)

    def beat(self) -> None:
        """The consumer's event loop turned."""
        with self._lock:
            self._last_beat = self._clock()

    def connected(self) -> None:
        """The consumer has its broker connection and consumes (again, after a reconnect)."""
        with self._lock:
            self._connected = True
            self._last_beat = self._clock()

    def disconnected(self) -> None:
        """The consumer lost its connection (it is reconnecting) or is stopping."""
        with self._lock:
            self._connected = False

    def worker_ready(self) -> None:
        """Celery's worker_ready: the consumer is about to run its loop for the first time."""
        with self._lock:
            self._started = True
            self._last_beat = self._clock()

    def shutting_down(self) -> None:
        with self._lock:
            self._shutting_down = True

    def report(self) -> HealthReport:
        with self._lock:
            since = None if self._last_beat is None else max(0.0, self._clock() - self._last_beat)
            # Before worker_ready, starting up is the startup probe's business; while shutting down the worker
            # finishes its tasks within the pod's grace period, and a failed liveness probe would only cut it short.
            fresh = since is not None and since <= self.stale_after_s
            return HealthReport(
                ready=self._started and self._connected and not self._shutting_down and fresh,
                live=not self._started or self._shutting_down or fresh,
                started=self._started,
                broker_connected=self._connected,
                shutting_down=self._shutting_down,
                seconds_since_beat=None if since is None else round(since, 3),
            )
