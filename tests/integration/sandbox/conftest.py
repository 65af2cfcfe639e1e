"""Fixtures for the sandbox's integration tests: a warm executor, and real servers as child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.common.settings import load_settings
from services.sandbox.executor import SandboxExecutor
from services.sandbox.settings import SandboxSettings
from support.processes import REPO, THINKMESH, read_first_line


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def executor() -> AsyncIterator[SandboxExecutor]:
    """One warm executor per test module (starting a zygote takes about a second)."""
    settings = load_settings(SandboxSettings, environ={}, max_workers=2, max_queue=2, max_batch=4)
    sandbox = SandboxExecutor(settings)
    await sandbox.start()
    yield sandbox
    await sandbox.close()


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    address: str
    log_path: Path

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the zygote is warm and health says SERVING (the first line comes before that)."""
        deadline = time.monotonic() + timeout
        while not any(entry["msg"] == "serving" for entry in self.logs()):
            assert self.process.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.05)

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextmanager
def sandbox_server(directory: Path, env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    """`thinkmesh serve sandbox --port 0` with its logs in a file (a pipe nobody reads could fill up)."""
    log_path = directory / f"sandbox-{len(list(directory.iterdir()))}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [THINKMESH, "serve", "sandbox", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "THINKMESH_SANDBOX_MAX_WORKERS": "2", **(env or {})},
            cwd=REPO,
        )
    try:
        line = read_first_line(process, timeout=60)
        assert line.startswith("listening on "), line
        yield ServerProcess(process, line.removeprefix("listening on "), log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """`start_server(env)` → a running server, stopped (SIGTERM) at the end of the test."""
    with ExitStack() as stack:
        yield lambda env=None: stack.enter_context(sandbox_server(tmp_path, env))


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """Like start_server, for a server shared by a whole module."""
    with ExitStack() as stack:
        yield lambda env=None: stack.enter_context(sandbox_server(tmp_path_factory.mktemp("sandbox"), env))
