"""The local stack's interrupts: a SIGTERM that arrives while a child is being started must not orphan it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.dev import stack as stack_module
from services.dev.stack import LocalStack, interrupt_on_sigterm
from support.processes import alive

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# Python that burns 0.3 s of CPU; then, with STAY, waits until the parent it had at its start has gone.
BURN = (
    "import os, time\nparent = os.getppid()\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
)
STAY = "while os.getppid() == parent: time.sleep(0.05)\n"


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


def test_a_process_trees_cpu_counts_its_descendants_and_only_its_own() -> None:
    """The traffic bench's profile: a child's CPU is its whole tree's, a descendant in a session of its own
    included (the sandbox's zygote), and one already ended (through its reaper's counters)."""
    # The parent only waits: one child burns 0.3 s and ends, another starts a session, burns 0.3 s and stays.
    parent = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {BURN!r}])\n"
        f"subprocess.run([sys.executable, '-c', {BURN + STAY!r}], start_new_session=True)"
    )
    busy = subprocess.Popen([sys.executable, "-c", parent])
    idle = subprocess.Popen(SLEEPER)
    try:
        deadline = time.monotonic() + 20
        while stack_module.process_tree_cpu([busy.pid])[busy.pid] < 0.6 and time.monotonic() < deadline:
            time.sleep(0.1)
        used = stack_module.process_tree_cpu([busy.pid, idle.pid])
        assert 0.6 <= used[busy.pid] < 5
        assert used[idle.pid] < 0.3
    finally:
        for process in (busy, idle):  # the one that stays leaves when its parent goes
            process.kill()
            process.wait()
