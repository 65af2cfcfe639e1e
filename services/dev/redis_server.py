"""A throwaway redis-server on a loopback port: the traffic bench's broker and result backend, and the test suite's
(tests/support/redis_server.py adds TLS). Nothing is saved to disk; the server is stopped on the way out."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_ping(port: int) -> bool:
    """Whether a plaintext Redis on `port` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(
    directory: Path,
    port: int | None = None,
    *,
    listen: Sequence[str] | None = None,
    ready: Callable[[int], bool] = answers_ping,
    scheme: str = "redis",
) -> Iterator[str]:
    """A redis-server on `port` (default: a free one) of 127.0.0.1, its files in `directory`; yields its URL once
    `ready(port)` holds. `listen`: the listening arguments instead of `--port PORT` (TLS: tests/support)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/system_deps.sh (make test does)")
    port = free_port() if port is None else port
    listening = ["--port", str(port)] if listen is None else list(listen)
    argv = [binary, *listening, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not ready(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"{scheme}://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
