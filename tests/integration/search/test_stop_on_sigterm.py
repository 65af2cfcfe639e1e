"""`thinkmesh up` and `thinkmesh evolve` start a whole stack of processes; SIGTERM must end every one of them."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.processes import REPO, THINKMESH, alive

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def _parents() -> dict[int, int]:
    """pid → parent pid of every process on the machine."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _descendants(root: int) -> set[int]:
    parents = _parents()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_for_line(proc: subprocess.Popen[str], marker: str, timeout: float) -> None:
    assert proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            line = proc.stderr.readline()
            seen.append(line)
            if marker in line:
                return
        assert proc.poll() is None, "".join(seen)[-3000:]
    raise TimeoutError(f"no line with {marker!r} in {timeout} s:\n{''.join(seen)[-3000:]}")


@pytest.mark.parametrize(
    "command",
    [
        ["up", "--preset", "micro"],
        ["evolve", "--preset", "tiny", "--bootstrap-preset", "micro", "--rounds", "1"],
    ],
    ids=["up", "evolve"],
)
def test_sigterm_stops_every_process_the_command_started(tmp_path: Path, command: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [THINKMESH, *command, "--state-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        # `up` announces the SearchService last; `evolve` starts no SearchService, and the worker right after the PPM.
        _wait_for_line(proc, "search listening on" if command[0] == "up" else "ppm listening on", 240)
        deadline = time.monotonic() + 30
        while not any("worker" in _cmdline(pid) for pid in _descendants(proc.pid)):
            assert time.monotonic() < deadline, "no Celery worker was started"
            time.sleep(0.2)
        started = _descendants(proc.pid)
        assert len(started) >= 5, "sandbox (and its zygote), policy, PPM and worker should be running"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(map(alive, started)):
        time.sleep(0.2)
    left = [pid for pid in started if alive(pid)]
    described = ", ".join(_cmdline(pid) for pid in left)
    for pid in left:  # a failing run must not leave them to the next test
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind after SIGTERM: {described}"
