"""Celery over a real Redis that speaks TLS only and demands client certificates (`tls-auth-clients yes`): a
task's round trip through a real worker, the cancellation flags in the result backend, and the settings that
configure it (THINKMESH_<SVC>_BROKER_TLS_CA / _CERT / _KEY)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from services.common.errors import ConfigError
from services.common.settings import load_settings
from services.search.cancellation import CancelRequests
from services.search.celery_app import make_celery
from services.search.settings import CelerySettings, SearchSettings
from services.trainer.settings import TrainerSettings
from support.certs import CertSet, make_certs
from support.processes import THINKMESH
from support.redis_server import redis_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@dataclass(frozen=True)
class TlsRedis:
    url: str  # rediss://127.0.0.1:PORT/0
    certs: CertSet

    def settings(self, *, client_cert: bool = True) -> CelerySettings:
        return CelerySettings(
            broker_url=self.url,
            result_backend=self.url,
            broker_tls_ca=self.certs.ca,
            broker_tls_cert=self.certs.client_cert if client_cert else None,
            broker_tls_key=self.certs.client_key if client_cert else None,
        )


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    with redis_server(tmp_path_factory.mktemp("redis"), tls=certs) as url:
        assert url.startswith("rediss://")
        yield TlsRedis(url, certs)


def test_a_task_goes_to_a_real_worker_and_back_over_tls(tls_redis: TlsRedis) -> None:
    """The worker reads its TLS settings from the environment, as a pod does; the sender uses make_celery."""
    env = {
        **os.environ,
        "THINKMESH_SEARCH_BROKER_URL": tls_redis.url,
        "THINKMESH_SEARCH_RESULT_BACKEND": tls_redis.url,
        "THINKMESH_SEARCH_BROKER_TLS_CA": str(tls_redis.certs.ca),
        "THINKMESH_SEARCH_BROKER_TLS_CERT": str(tls_redis.certs.client_cert),
        "THINKMESH_SEARCH_BROKER_TLS_KEY": str(tls_redis.certs.client_key),
    }
    worker = subprocess.Popen(
        [THINKMESH, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        app = make_celery(tls_redis.settings())
        assert app.send_task("thinkmesh.ping").get(timeout=60) == "pong"
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr[-2000:]


def test_cancellation_flags_use_the_tls_result_backend(tls_redis: TlsRedis) -> None:
    flags = CancelRequests(make_celery(tls_redis.settings()))
    assert not flags.requested("tls-task")
    flags.request("tls-task")
    assert flags.requested("tls-task")


def test_the_server_refuses_plaintext_and_clients_without_a_certificate(tls_redis: TlsRedis) -> None:
    """So the round trip above cannot have passed over plaintext, nor without the client certificate."""
    plaintext = tls_redis.url.replace("rediss://", "redis://", 1)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(plaintext, socket_timeout=5).ping()
    no_client_cert = make_celery(tls_redis.settings(client_cert=False))
    with pytest.raises(redis.ConnectionError):
        no_client_cert.backend.client.ping()
    with_client_cert = make_celery(tls_redis.settings())
    assert with_client_cert.backend.client.ping()


def test_the_server_certificate_is_verified(tls_redis: TlsRedis, tmp_path: Path) -> None:
    """A CA that did not sign Redis's certificate is refused: the TLS is not encryption without verification."""
    other = make_certs(tmp_path)
    wrong_ca = CelerySettings(
        broker_url=tls_redis.url,
        result_backend=tls_redis.url,
        broker_tls_ca=other.ca,
        broker_tls_cert=tls_redis.certs.client_cert,
        broker_tls_key=tls_redis.certs.client_key,
    )
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        make_celery(wrong_ca).backend.client.ping()


def test_tls_settings_come_from_each_services_variables(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key"
    for settings_class, prefix in ((SearchSettings, "THINKMESH_SEARCH_"), (TrainerSettings, "THINKMESH_TRAINER_")):
        environ = {
            f"{prefix}BROKER_URL": "rediss://redis:6380/0",
            f"{prefix}RESULT_BACKEND": "rediss://redis:6380/1",
            f"{prefix}BROKER_TLS_CA": str(ca),
            f"{prefix}BROKER_TLS_CERT": str(cert),
            f"{prefix}BROKER_TLS_KEY": str(key),
        }
        celery = load_settings(settings_class, environ).celery  # type: ignore[attr-defined]
        assert (celery.broker_tls_ca, celery.broker_tls_cert, celery.broker_tls_key) == (ca, cert, key)
        app = make_celery(celery)
        for option in (app.conf.broker_use_ssl, app.conf.redis_backend_use_ssl):
            assert option["ssl_ca_certs"] == str(ca)
            assert (option["ssl_certfile"], option["ssl_keyfile"]) == (str(cert), str(key))


def test_rediss_without_a_ca_verifies_against_the_system_cas() -> None:
    app = make_celery(CelerySettings(broker_url="rediss://redis:6380/0", result_backend="rediss://redis:6380/0"))
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert app.conf.redis_backend_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        (CelerySettings(broker_url="rediss://r/0", broker_tls_cert=Path("tls.crt")), "BROKER_TLS_KEY"),
        (CelerySettings(broker_url="rediss://r/0", broker_tls_key=Path("tls.key")), "BROKER_TLS_KEY"),
        (CelerySettings(broker_url="redis://r/0", broker_tls_ca=Path("ca.crt")), "BROKER_URL"),
        (CelerySettings(broker_tls_ca=Path("ca.crt")), "BROKER_URL"),  # the SQLite defaults
        (
            CelerySettings(broker_url="rediss://r/0", result_backend="redis://r/1", broker_tls_ca=Path("ca.crt")),
            "RESULT_BACKEND",
        ),
    ],
)
def test_inconsistent_tls_settings_are_refused(settings: CelerySettings, variable: str) -> None:
    with pytest.raises(ConfigError, match=f"THINKMESH_SEARCH_{variable}"):
        settings.validate(SearchSettings())
    with pytest.raises(ConfigError, match=variable):
        make_celery(settings)
