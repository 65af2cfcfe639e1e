"""Settings of the search tier (THINKMESH_SEARCH_*): the SearchService and the Celery workers read the same
object, so the broker, the backend targets and the search defaults are configured once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from services.common.security import TlsFiles
from services.common.server import ServerSettings
from services.common.settings import require
from services.search.answers import DEFAULT_METHOD, METHODS

SEARCH_QUEUE = "search"


@dataclass(frozen=True)
class SearchSettings(ServerSettings):
    SERVICE: ClassVar[str] = "search"

    port: int = 50054
    # Celery: Redis in a cluster; SQLite through kombu's SQLAlchemy transport embedded (no server needed).
    broker_url: str = "sqla+sqlite:///.thinkmesh/celery-broker.sqlite"
    result_backend: str = "db+sqlite:///.thinkmesh/celery-results.sqlite"
    worker_concurrency: int = 16  # tasks one worker process runs at once; their trees share batches
    # Redis: a task whose worker died unacknowledged is redelivered after this long. Keep it above the longest
    # search (default_deadline_s) so a slow task is never run twice.
    visibility_timeout_s: int = 900
    queues: tuple[str, ...] = (SEARCH_QUEUE,)
    # The services a worker calls; dns:/// targets balance round-robin over every pod.
    policy_target: str = "127.0.0.1:50052"
    ppm_target: str = "127.0.0.1:50053"
    sandbox_target: str = "127.0.0.1:50051"
    # Client TLS towards those services (mutual TLS with the server certificate when set).
    client_tls_ca: Path | None = None
    # Defaults for a Solve whose fields are 0, and the most a request may ask for.
    rollouts: int = 16
    candidates: int = 4
    max_depth: int = 16
    searches: int = 1
    max_rollouts: int = 256
    max_candidates: int = 32
    max_searches: int = 16
    max_problem_chars: int = 8_000
    max_concurrent_solves: int = 64
    temperature: float = 0.8
    max_new_tokens: int = 256
    exec_timeout_ms: int = 10_000
    c: float = 2.0
    q_mode: str = "ppm"
    answer_method: str = DEFAULT_METHOD
    # A Solve without a client deadline is bounded by this.
    default_deadline_s: float = 600.0

    def validate(self) -> None:
        super().validate()
        require(self.worker_concurrency > 0, self, "worker_concurrency", "must be at least 1")
        require(bool(self.queues), self, "queues", "name at least one queue")
        require(self.visibility_timeout_s > 0, self, "visibility_timeout_s", "must be positive")
        require(0 < self.rollouts <= self.max_rollouts, self, "rollouts", "must be between 1 and max_rollouts")
        require(0 < self.candidates <= self.max_candidates, self, "candidates", "must be between 1 and max_candidates")
        require(0 < self.searches <= self.max_searches, self, "searches", "must be between 1 and max_searches")
        require(self.max_depth > 0, self, "max_depth", "must be at least 1")
        require(self.q_mode in ("terminal", "ppm"), self, "q_mode", "must be 'terminal' or 'ppm'")
        require(self.answer_method in METHODS, self, "answer_method", f"must be one of {', '.join(METHODS)}")

    @property
    def client_tls(self) -> TlsFiles | None:
        if self.client_tls_ca is None:
            return None
        return TlsFiles(cert=self.tls_cert, key=self.tls_key, ca=self.client_tls_ca)
