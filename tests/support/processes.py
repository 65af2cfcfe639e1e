"""Start a thinkmesh server as a child process and learn its address from its first line."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
THINKMESH = str(Path(sys.executable).with_name("thinkmesh"))


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.1):
            return proc.stdout.readline().rstrip("\n")
        if proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening:\n{stderr}")
    raise TimeoutError(f"no first line within {timeout}s")


@contextmanager
def server_process(
    argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Yields (process, "host:port"); the process is stopped (SIGTERM, then SIGKILL) afterwards."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO
    )
    try:
        line = read_first_line(proc, timeout)
        assert line.startswith("listening on "), f"unexpected first line {line!r}"
        yield proc, line.removeprefix("listening on ")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_serving(address: str, timeout: float = 120.0, alive: Callable[[], bool] | None = None) -> None:
    """Block until the server's health says SERVING (e.g. its model is loaded). `alive` tells a server that has
    stopped from one still starting: then this fails at once (RuntimeError) instead of at the timeout."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    last = "no answer"
    # Only loopback is dialled here: never through a proxy from the environment.
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as exc:
                last = exc.code().name
            if alive is not None and not alive():
                raise RuntimeError(f"{address} stopped before it was SERVING (last: {last})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} never became SERVING (last: {last})")
            time.sleep(0.1)
