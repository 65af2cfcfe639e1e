"""`thinkmesh worker` runs a real Celery worker over the embedded SQLite broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from services.search.celery_app import make_celery
from services.search.settings import CelerySettings

THINKMESH = str(Path(sys.executable).with_name("thinkmesh"))


def test_worker_answers_a_ping_over_sqlite_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "THINKMESH_SEARCH_BROKER_URL": f"sqla+sqlite:///{tmp_path}/broker.sqlite",
        "THINKMESH_SEARCH_RESULT_BACKEND": f"db+sqlite:///{tmp_path}/results.sqlite",
    }
    worker = subprocess.Popen(
        [THINKMESH, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        app = make_celery(
            CelerySettings(
                broker_url=env["THINKMESH_SEARCH_BROKER_URL"], result_backend=env["THINKMESH_SEARCH_RESULT_BACKEND"]
            )
        )
        assert app.send_task("thinkmesh.ping").get(timeout=60) == "pong"
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr[-2000:]
