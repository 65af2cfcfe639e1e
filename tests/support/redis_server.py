"""A real redis-server on a free loopback port, for the duration of a test module; TLS only when given certs."""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.dev import redis_server as dev_redis
from services.dev.redis_server import free_port  # the module's own: a test may put another in its place
from support.certs import CertSet


def _tls_args(port: int, certs: CertSet) -> list[str]:
    """No plaintext port; clients must present a certificate the CA signed (`tls-auth-clients yes`)."""
    return [
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(certs.server_cert),
        "--tls-key-file",
        str(certs.server_key),
        "--tls-ca-cert-file",
        str(certs.ca),
        "--tls-auth-clients",
        "yes",
    ]


def _pings(port: int, certs: CertSet) -> bool:
    """Whether the TLS Redis on `port` answers PING to a client with the certificate it demands."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as raw:
            context = ssl.create_default_context(cafile=str(certs.ca))
            context.load_cert_chain(certs.client_cert, certs.client_key)
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
    except OSError:  # ssl.SSLError is an OSError too
        return False


@contextmanager
def redis_server(directory: Path, *, tls: CertSet | None = None) -> Iterator[str]:
    """Yields a redis:// URL (rediss:// with `tls`: the server's certificate and CA from `tls`, and its client
    certificate required of every client); the server is stopped afterwards."""
    port = free_port()
    if tls is None:
        with dev_redis.redis_server(directory, port) as url:
            yield url
        return
    listen, ready = _tls_args(port, tls), functools.partial(_pings, certs=tls)
    with dev_redis.redis_server(directory, port, listen=listen, ready=ready, scheme="rediss") as url:
        yield url
