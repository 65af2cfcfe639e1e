"""A real redis-server on a free loopback port, for the duration of a test module; TLS only when given certs."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.certs import CertSet


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _pings(port: int, certs: CertSet | None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as raw:
            conn: socket.socket = raw
            if certs is not None:
                context = ssl.create_default_context(cafile=str(certs.ca))
                context.load_cert_chain(certs.client_cert, certs.client_key)
                conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:  # ssl.SSLError is an OSError too
        return False


@contextmanager
def redis_server(directory: Path, *, tls: CertSet | None = None) -> Iterator[str]:
    """Yields a redis:// URL (rediss:// with `tls`: the server's certificate and CA from `tls`, and its client
    certificate required of every client); the server is stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/system_deps.sh (make test does)")
    port = free_port()
    listen = ["--port", str(port)] if tls is None else _tls_args(port, tls)
    process = subprocess.Popen(
        [
            binary,
            *listen,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _pings(port, tls):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        scheme = "redis" if tls is None else "rediss"
        yield f"{scheme}://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
