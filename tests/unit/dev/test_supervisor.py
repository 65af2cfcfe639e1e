"""The local stack's supervisor: a child that dies is reaped, said, and restarted (the same port, after a backoff,
after its hook); one that keeps dying stops the stack; the stack stops its children newest first."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.dev.stack import LocalStack, RestartPolicy, interrupt_on_sigterm
from services.dev.supervisor import describe_exit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
FAST = RestartPolicy(max_restarts=2, window_s=60, first_backoff_s=0.05, max_backoff_s=0.2)


@pytest.fixture
def interrupts() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    interrupt_on_sigterm()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def stack(tmp_path: Path, said: list[str]) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path, announce=said.append, restart_policy=FAST)
    (tmp_path / "logs").mkdir()
    yield stack
    stack.stop(grace=5)


def _state(pid: int) -> str:
    """'R', 'S', 'Z', … from /proc, or '' when no such process exists (a reaped one)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_killed_child_is_reaped_and_restarted(stack: LocalStack, said: list[str]) -> None:
    child = stack._spawn("sleeper", SLEEPER, dict(os.environ), listens=False)
    stack._supervise()
    first = child.process.pid
    os.kill(first, signal.SIGKILL)
    took = _until(lambda: child.process.pid != first)
    assert _state(first) == "", "the dead child was not reaped"
    assert _state(child.process.pid) in ("R", "S")
    assert took < 2
    assert f"!! sleeper (pid {first}) was killed by SIGKILL; restarting it in 0.1 s" in said[0]
    assert said[1] == f"!! sleeper restarted as pid {child.process.pid}"


def test_a_child_that_keeps_dying_stops_the_stack(stack: LocalStack, said: list[str], interrupts: None) -> None:
    stack._spawn("crasher", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), listens=False)
    with pytest.raises(KeyboardInterrupt):  # the supervisor interrupts the main thread, as Ctrl-C would
        stack._supervise()
        _until(lambda: False, timeout=20)
    assert "crasher (pid" in stack.failure
    assert "exited with code 3: 3 deaths within 60 s, past the 2 restarts allowed; stopping the stack" in stack.failure
    assert sum("restarting it in" in line for line in said) == 2
    assert said[-1] == f"!! {stack.failure}"
    (child,) = stack.children
    assert child.process.poll() == 3  # reaped


def test_a_listening_child_comes_back_on_its_port_after_its_hook(stack: LocalStack, tmp_path: Path) -> None:
    server = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', int(sys.argv[sys.argv.index('--port') + 1]))); s.listen()\n"
        "print(f'listening on 127.0.0.1:{s.getsockname()[1]}', flush=True)\n"
        "time.sleep(60)\n"
    )
    hooked: list[str] = []
    child = stack._spawn(
        "server",
        [sys.executable, "-c", server, "--port", "0"],
        dict(os.environ),
        listens=True,
        before_restart=lambda: hooked.append(_state(first)),
    )
    stack._supervise()
    first, port = child.process.pid, child.address.rsplit(":", 1)[1]
    os.kill(first, signal.SIGKILL)
    _until(lambda: child.process.pid != first)
    assert hooked == [""], "the hook runs once, after the dead child was reaped"
    _until(lambda: f"listening on 127.0.0.1:{port}" in (tmp_path / "logs" / "server.log").read_text())
    assert child.address == f"127.0.0.1:{port}"


def test_the_stack_stops_its_children_newest_first_and_reaps_them(
    stack: LocalStack, said: list[str], tmp_path: Path
) -> None:
    record = tmp_path / "stopped"
    note = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        f"    open({str(record)!r}, 'a').write(sys.argv[1] + '\\n'); time.sleep(0.2); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "time.sleep(60)\n"
    )
    children = [
        stack._spawn(name, [sys.executable, "-c", note, name], dict(os.environ), listens=False)
        for name in ("sandbox", "worker", "search")
    ]
    pids = [child.process.pid for child in children]
    time.sleep(0.5)  # their handlers are in place
    stack._supervise()
    stack.stop(grace=5)
    assert record.read_text().split() == ["search", "worker", "sandbox"]
    assert [_state(pid) for pid in pids] == ["", "", ""]
    assert said == [], "a child stopped by the stack is not a death"


def test_exits_are_described() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(2) == "exited with code 2"
    assert FAST.backoff(0) == 0.05 and FAST.backoff(10) == 0.2
