"""Asking a running solve to stop early: a plain flag in the result backend, keyed by the task's id.

The SearchService raises it when its caller goes away; the worker looks at it between ticks (at most twice a
second) and answers with the best found so far. Celery's own `revoke` cannot do this here: it is broadcast, and
kombu's SQLite transport (the embedded broker) has no broadcast. So the flag lives where both sides already
connect: a key in a key-value backend (Redis), a row of a table of its own in a database backend (SQLite).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

_PREFIX = "thinkmesh-cancel-"
_TABLE = "thinkmesh_cancel_requests"


class CancelRequests:
    def __init__(self, app: Celery) -> None:
        self.app = app
        self._table_ready = False

    def request(self, task_id: str) -> None:
        """Ask the task `task_id` to stop (idempotent)."""
        backend = self.app.backend  # per thread: Celery keeps one backend object per thread
        if _is_key_value(backend):
            backend.set(_PREFIX + task_id, b"1")  # Redis: expires with the results (result_expires)
        elif _is_database(backend):
            self._execute(
                backend,
                f"INSERT INTO {_TABLE} (task_id) SELECT :task_id WHERE NOT EXISTS "
                f"(SELECT 1 FROM {_TABLE} WHERE task_id = :task_id)",
                task_id,
            )
        else:
            log.warning("cannot cancel task %s: the %s result backend keeps no flags", task_id, type(backend).__name__)

    def requested(self, task_id: str) -> bool:
        backend = self.app.backend
        if _is_key_value(backend):
            return backend.get(_PREFIX + task_id) is not None
        if _is_database(backend):
            return self._execute(backend, f"SELECT 1 FROM {_TABLE} WHERE task_id = :task_id", task_id) is not None
        return False

    def _execute(self, backend: Any, statement: str, task_id: str) -> Any:
        from sqlalchemy import text

        session = backend.ResultSession()
        try:
            if not self._table_ready:
                session.execute(text(f"CREATE TABLE IF NOT EXISTS {_TABLE} (task_id VARCHAR(155) PRIMARY KEY)"))
                self._table_ready = True
            result = session.execute(text(statement), {"task_id": task_id})
            row = result.first() if result.returns_rows else None
            session.commit()
            return row
        finally:
            session.close()


def _is_key_value(backend: Any) -> bool:
    from celery.backends.base import BaseKeyValueStoreBackend

    return isinstance(backend, BaseKeyValueStoreBackend)


def _is_database(backend: Any) -> bool:
    return type(backend).__name__ == "DatabaseBackend"  # without importing SQLAlchemy where it is not used
