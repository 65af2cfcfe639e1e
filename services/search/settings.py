"""Settings of the search tier (THINKMESH_SEARCH_*): the SearchService and the Celery workers read the same
object, so the broker, the backend targets and the search defaults are configured once.

It is composed of groups declared once each and shared: the broker (`CelerySettings`) and the services called
(`ServiceTargets`) with the trainer, the engine's own `SearchConfig` and `Sampling` with the evaluator. A group's
fields keep flat variable names (THINKMESH_SEARCH_ROLLOUTS sets `search.rollouts`: services/common/settings.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from services.common.security import TlsFiles
from services.common.server import ServerSettings
from services.common.settings import require
from services.search.engine.answers import DEFAULT_METHOD, METHODS
from services.search.engine.mcts import INFERENCE, SearchConfig
from services.search.engine.orchestrator import Sampling

# Two queues, so interactive searches never wait behind a round's thousands: Solve calls go to `solve`, a training
# round's problems to `round`. A worker consumes the queues its `queues` setting names (both by default: one local
# worker does everything); in a cluster each queue has workers of its own (the chart's worker pools).
SOLVE_QUEUE = "solve"
ROUND_QUEUE = "round"
QUEUES = (SOLVE_QUEUE, ROUND_QUEUE)
# How a worker spreads its policy calls over the policy's replicas (`SearchSettings.policy_routing`).
POLICY_ROUTINGS = ("affinity", "round_robin")


@dataclass(frozen=True)
class CelerySettings:
    """The broker and result backend: Redis in a cluster; SQLite through kombu's SQLAlchemy transport embedded."""

    broker_url: str = "sqla+sqlite:///.thinkmesh/celery-broker.sqlite"
    result_backend: str = "db+sqlite:///.thinkmesh/celery-results.sqlite"
    # Redis and the embedded sqla+ broker alike: a task whose worker died unacknowledged is redelivered after this
    # long. Keep it above the longest search (SearchSettings.task_time_limit_s, checked at start-up) so a slow task
    # is never run twice. (The local stack does not wait: it puts its dead worker's tasks back before restarting it,
    # services/dev/supervisor.py.)
    visibility_timeout_s: int = 900
    # TLS to a rediss:// broker and result backend: the CA that signed Redis's certificate (unset: the system's
    # CAs), and the client certificate and key that a Redis with `tls-auth-clients yes` demands.
    broker_tls_ca: Path | None = None
    broker_tls_cert: Path | None = None
    broker_tls_key: Path | None = None

    @property
    def broker_tls(self) -> bool:
        return any(f is not None for f in (self.broker_tls_ca, self.broker_tls_cert, self.broker_tls_key))

    def validate(self, owner: object | None = None) -> None:
        """`owner`: the settings object holding this group, so that a message names its variable
        (THINKMESH_SEARCH_BROKER_TLS_KEY); without one it says THINKMESH_<SERVICE>_BROKER_TLS_KEY."""
        owner = owner if owner is not None else _AnyService()
        require(self.visibility_timeout_s > 0, owner, "visibility_timeout_s", "must be positive")
        require(
            (self.broker_tls_cert is None) == (self.broker_tls_key is None),
            owner,
            "broker_tls_key",
            "set broker_tls_cert and broker_tls_key together",
        )
        if not self.broker_tls:
            return
        for name, url in (("broker_url", self.broker_url), ("result_backend", self.result_backend)):
            require(
                not url.startswith("redis://"),
                owner,
                name,
                "is plaintext redis:// while broker_tls_* are set: use rediss://",
            )
        require(
            self.broker_url.startswith("rediss://") or self.result_backend.startswith("rediss://"),
            owner,
            "broker_url",
            "broker_tls_ca/broker_tls_cert/broker_tls_key apply to a rediss:// broker or result backend only",
        )


class _AnyService:
    SERVICE: ClassVar[str] = "<service>"


@dataclass(frozen=True)
class ServiceTargets:
    """The gRPC services a search calls; dns:/// targets balance round-robin over every pod."""

    policy_target: str = "127.0.0.1:50052"
    ppm_target: str = "127.0.0.1:50053"
    sandbox_target: str = "127.0.0.1:50051"
    # Client TLS towards those services (mutual TLS with the caller's own server certificate when set).
    client_tls_ca: Path | None = None

    def client_tls(self, server: ServerSettings) -> TlsFiles | None:
        if self.client_tls_ca is None:
            return None
        return TlsFiles(cert=server.tls_cert, key=server.tls_key, ca=self.client_tls_ca)


@dataclass(frozen=True)
class SearchSettings(ServerSettings):
    SERVICE: ClassVar[str] = "search"

    port: int = 50054
    celery: CelerySettings = field(default_factory=CelerySettings)
    targets: ServiceTargets = field(default_factory=ServiceTargets)
    # `affinity`: every policy call of one tree (one question) goes to the same replica of those policy_target
    # resolves to (consistent hashing; the next replica when that one goes), whose prefix cache then holds the
    # tree's prefix: docs/benchmarks.md measures the hit rate. `round_robin` spreads each batch's calls instead.
    # A task's own policy (a teacher's target) is routed the same way. `round_robin` by default, for one local
    # replica (where affinity would only split each batch into calls); the chart sets `affinity`.
    policy_routing: str = "round_robin"
    # Tasks one worker process runs at once (threads on one loop; their trees share batches). As many as one
    # SearchService takes at once (max_concurrent_solves): a Solve whose task waits in the queue past its stop time
    # has no answer to give (DEADLINE_EXCEEDED).
    worker_concurrency: int = 64
    # The queues this worker consumes (SOLVE_QUEUE, ROUND_QUEUE).
    queues: tuple[str, ...] = QUEUES
    # The longest one task searches, from the moment a worker starts it: then it answers with the best found so far
    # (stopped early). Below the broker's visibility timeout (celery.visibility_timeout_s, checked at start-up):
    # a task still unacknowledged after that is redelivered, and a search running longer would run twice. Unset:
    # 90 % of the visibility timeout.
    task_time_limit_s: float | None = None
    # The defaults of a Solve whose knobs are 0 (the engine's: rollouts, candidates, max_depth, c, q_mode, ...)
    # and of its sampling (temperature, max_new_tokens, exec_timeout_ms, max_batch).
    search: SearchConfig = INFERENCE
    sampling: Sampling = field(default_factory=Sampling)
    searches: int = 1
    answer_method: str = DEFAULT_METHOD
    # The most a request may ask for.
    max_rollouts: int = 256
    max_candidates: int = 32
    max_searches: int = 16
    max_problem_chars: int = 8_000
    # A reference answer (training mode) is a final answer, not a text: bounded before anything is queued.
    max_reference_chars: int = 1_000
    max_concurrent_solves: int = 64
    # Backpressure: a Solve is refused (RESOURCE_EXHAUSTED, with a retry pushback) while this many tasks or more
    # wait in the solve queue (read from the broker at most once a second; 0 = no bound). Unknown (the broker does
    # not answer): admitted.
    max_solve_queue: int = 256
    # A Solve without a client deadline is bounded by this.
    default_deadline_s: float = 600.0
    # The worker's probe endpoint (GET /livez, /readyz over HTTP on `host`; 0 = off): both fail once its
    # consumer loop has not turned for health_stale_s (a wedged loop, or a broker reconnect that never succeeds),
    # so keep it above the broker outages a worker should ride out without a restart.
    health_port: int = 0
    health_stale_s: float = 60.0

    def validate(self) -> None:
        super().validate()
        s = self.search
        require(self.worker_concurrency > 0, self, "worker_concurrency", "must be at least 1")
        require(bool(self.queues), self, "queues", "name at least one queue")
        unknown = sorted(set(self.queues) - set(QUEUES))
        require(not unknown, self, "queues", f"{', '.join(unknown)}: the queues are {', '.join(QUEUES)}")
        self.celery.validate(self)
        require(
            0 < self.time_limit_s < self.celery.visibility_timeout_s,
            self,
            "task_time_limit_s",
            f"must be positive and below visibility_timeout_s ({self.celery.visibility_timeout_s} s), or the broker "
            "redelivers a search that is still running and it runs twice",
        )
        require(self.max_reference_chars > 0, self, "max_reference_chars", "must be at least 1")
        require(self.max_solve_queue >= 0, self, "max_solve_queue", "must be 0 (no bound) or more")
        require(0 < s.rollouts <= self.max_rollouts, self, "rollouts", "must be between 1 and max_rollouts")
        require(0 < s.candidates <= self.max_candidates, self, "candidates", "must be between 1 and max_candidates")
        require(0 < self.searches <= self.max_searches, self, "searches", "must be between 1 and max_searches")
        require(s.max_depth > 0, self, "max_depth", "must be at least 1")
        require(s.max_code_errors > 0, self, "max_code_errors", "must be at least 1")
        require(s.q_mode in ("terminal", "ppm"), self, "q_mode", "must be 'terminal' or 'ppm'")
        require(self.answer_method in METHODS, self, "answer_method", f"must be one of {', '.join(METHODS)}")
        require(
            self.policy_routing in POLICY_ROUTINGS,
            self,
            "policy_routing",
            f"must be one of {', '.join(POLICY_ROUTINGS)}",
        )
        require(self.sampling.max_batch > 0, self, "max_batch", "must be at least 1")
        require(0 <= self.health_port <= 65535, self, "health_port", "must be between 0 (off) and 65535")
        # On the SQLite transport the consumer loop waits up to 2 s for a message between turns.
        require(self.health_stale_s >= 5, self, "health_stale_s", "must be at least 5 (seconds)")

    @property
    def time_limit_s(self) -> float:
        """task_time_limit_s, or 90 % of the broker's visibility timeout when unset."""
        if self.task_time_limit_s is not None:
            return self.task_time_limit_s
        return 0.9 * self.celery.visibility_timeout_s

    @property
    def client_tls(self) -> TlsFiles | None:
        return self.targets.client_tls(self)
