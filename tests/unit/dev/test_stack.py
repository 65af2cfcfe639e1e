"""The local stack's interrupts: a SIGTERM that arrives while a child is being started must not orphan it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.dev import stack as stack_module
from services.dev.stack import LocalStack, interrupt_on_sigterm
from support.processes import alive

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def interrupts() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    interrupt_on_sigterm()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_sigterm_while_a_child_starts_still_stops_that_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupts: None
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_then_sigterm(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        # The child runs before Popen returns to the stack: the signal lands in that window on purpose.
        process = real_popen(*args, **kwargs)
        started.append(process)
        os.kill(os.getpid(), signal.SIGTERM)
        return process

    monkeypatch.setattr(stack_module.subprocess, "Popen", popen_then_sigterm)
    stack = LocalStack(tmp_path)
    (tmp_path / "logs").mkdir()
    try:
        with pytest.raises(KeyboardInterrupt):
            stack._spawn("sleeper", SLEEPER, dict(os.environ), listens=False)
    finally:
        stack.stop(grace=5)
    (child,) = started
    try:
        assert child.wait(timeout=10) is not None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_second_interrupt_does_not_cut_the_stop_short(tmp_path: Path, interrupts: None) -> None:
    stack = LocalStack(tmp_path)
    (tmp_path / "logs").mkdir()
    stack._spawn("sleeper", SLEEPER, dict(os.environ), listens=False)
    process = stack.children[0].process
    real_wait = process.wait

    def wait_after_sigterm(timeout: float | None = None) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # a second Ctrl-C or SIGTERM while stopping
        return real_wait(timeout)

    process.wait = wait_after_sigterm  # type: ignore[method-assign]
    try:
        stack.stop(grace=5)
    except KeyboardInterrupt:
        pytest.fail("the second interrupt escaped from stop()")
    finally:
        if process.poll() is None:
            process.kill()
            real_wait()
    assert not alive(process.pid)
    assert stack.children == []
