"""The local stack and the process that owns it: killed outright (SIGKILL), it takes every child with it; asked
to stop (SIGTERM), it stops them and exits 0; and while it runs, a child that is killed comes back.

The quick tests run a stand-in for `thinkmesh up` (the same stack, interrupts and pause, over sleepers); the slow
one runs `thinkmesh up` itself on the micro models."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.store import ModelStore
from support.processes import REPO, THINKMESH, alive, wait_serving
from support.tiny_models import publish_micro_models

pytestmark = pytest.mark.integration

# What `thinkmesh up` does, over three children that sleep: argv[1] is the state directory.
STAND_IN = """
import os, signal, sys
from pathlib import Path
from services.dev.stack import LocalStack, RestartPolicy, interrupt_on_sigterm

interrupt_on_sigterm()
stack = LocalStack(
    Path(sys.argv[1]),
    announce=lambda line: print(line, file=sys.stderr, flush=True),
    restart_policy=RestartPolicy(max_restarts=2, window_s=60, first_backoff_s=0.1),
)
(stack.state_dir / "logs").mkdir(parents=True, exist_ok=True)
try:
    for name in ("sandbox", "policy", "worker"):
        stack._spawn(name, [sys.executable, "-c", "import time; time.sleep(600)"], dict(os.environ), listens=False)
    stack._supervise()
    print("children", *(child.process.pid for child in stack.children), flush=True)
    signal.pause()
except KeyboardInterrupt:
    pass
finally:
    stack.stop(grace=10)
sys.exit(1 if stack.failure else 0)
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """The stand-in and its children's pids (all killed afterwards if a test left them)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    children = [int(pid) for pid in line.split()[1:]]
    try:
        assert line.startswith("children "), (line, parent.stderr.read() if parent.stderr else "")
        yield parent, children
    finally:
        for pid in [parent.pid, *children]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()
        for stream in (parent.stdout, parent.stderr):
            if stream is not None:
                stream.close()


def _gone_within(pids: list[int], timeout: float) -> float:
    started = time.monotonic()
    while any(map(alive, pids)):
        if time.monotonic() - started > timeout:
            for pid in filter(alive, pids):  # a failing run must not leave them to the next test
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"still running {timeout} s after: {[pid for pid in pids if alive(pid)]}")
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_sigkilled_parent_takes_every_child_with_it(stand_in: tuple[subprocess.Popen[str], list[int]]) -> None:
    parent, children = stand_in
    assert all(map(alive, children))
    parent.kill()
    parent.wait()
    took = _gone_within(children, timeout=10)
    print(f"children gone {took:.2f} s after the parent's SIGKILL")


def test_a_sigterm_stops_every_child_and_exits_0(stand_in: tuple[subprocess.Popen[str], list[int]]) -> None:
    parent, children = stand_in
    started = time.monotonic()
    parent.send_signal(signal.SIGTERM)
    assert parent.stderr is not None
    parent.wait(timeout=30)
    stderr = parent.stderr.read()
    print(f"stopped in {time.monotonic() - started:.2f} s")
    assert parent.returncode == 0, stderr
    assert not any(map(alive, children))
    assert "!!" not in stderr, "the stack's own stop is not a death"


def test_a_child_that_keeps_dying_ends_the_parent_non_zero(
    stand_in: tuple[subprocess.Popen[str], list[int]],
) -> None:
    parent, children = stand_in
    started = time.monotonic()
    # The stand-in's policy: 2 restarts within a minute; a third death stops the stack.
    victim = children[1]
    assert parent.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(parent.stderr, selectors.EVENT_READ)
    said = []
    deaths = 0
    while parent.poll() is None:
        assert time.monotonic() - started < 60, "".join(said)
        if deaths < 3 and alive(victim):
            os.kill(victim, signal.SIGKILL)
            deaths += 1
        if selector.select(timeout=0.1):
            line = parent.stderr.readline()
            said.append(line)
            if "restarted as pid" in line:
                victim = int(line.rsplit(" ", 1)[1])
    said.append(parent.stderr.read())
    text = "".join(said)
    assert parent.returncode == 1, text
    assert "policy (pid" in text and "3 deaths within 60 s, past the 2 restarts allowed; stopping the stack" in text
    assert not any(map(alive, children))


# ------------------------------------------------------------------------------------------ thinkmesh up


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError):
            parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _child(up: subprocess.Popen[str], command: str) -> int:
    (pid,) = [pid for pid in _descendants(up.pid) if _cmdline(pid).endswith(command)]
    return pid


class Lines:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.proc, self.seen = proc, []
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stderr, selectors.EVENT_READ)

    def wait_for(self, marker: str, timeout: float) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.selector.select(timeout=0.2):
                line = self.proc.stderr.readline()
                self.seen.append(line)
                if marker in line:
                    return line
            assert self.proc.poll() is None, "".join(self.seen)[-3000:]
        raise TimeoutError(f"no line with {marker!r} in {timeout} s:\n{''.join(self.seen)[-3000:]}")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    publish_micro_models(ModelStore(tmp_path / "store"))  # a second, where `up` would bootstrap for ten
    proc = subprocess.Popen(
        [THINKMESH, "up", "--preset", "micro", "--state-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=REPO,
    )
    yield proc
    left = _descendants(proc.pid)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_up_restarts_a_killed_service_on_its_address_and_dies_with_its_parent(up: subprocess.Popen[str]) -> None:
    lines = Lines(up)
    address = lines.wait_for("policy listening on", 300).split()[-1]
    lines.wait_for("search listening on", 300)
    policy = _child(up, "serve policy --port 0")
    os.kill(policy, signal.SIGKILL)
    killed = time.monotonic()
    restarted = int(lines.wait_for("policy restarted as pid", 30).split()[-1])
    assert not Path(f"/proc/{policy}").exists(), "the dead policy was not reaped"
    wait_serving(address, timeout=120)  # the same address: the worker and the SearchService find it there
    print(f"policy serving again {time.monotonic() - killed:.1f} s after its SIGKILL")
    assert _cmdline(restarted).endswith(f"serve policy --port {address.rsplit(':', 1)[1]}")

    everything = _descendants(up.pid)
    assert len(everything) >= 6, "sandbox (and its zygote), policy, PPM, worker and search"
    up.kill()
    up.wait()
    took = _gone_within(sorted(everything), timeout=60)
    print(f"all {len(everything)} processes gone {took:.1f} s after `up` was SIGKILLed")
