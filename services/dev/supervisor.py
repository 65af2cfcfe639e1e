"""Watching the local stack's children: a child that dies is reaped at once, said loudly, and restarted after a
backoff; one that keeps dying stops the whole stack.

The supervisor is a thread of the `thinkmesh up` / `evolve` process. It polls its children (`Popen.poll` reaps
them: no zombie lives longer than one poll), and it knows nothing of how a child is started: `restart` does that
(services/dev/stack.py), and `give_up` tells the stack that it must stop.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RestartPolicy:
    """A child may die `max_restarts` times within `window_s` and is restarted each time, after a backoff that
    doubles from `first_backoff_s` up to `max_backoff_s`; one more death within the window stops the stack."""

    max_restarts: int = 5
    window_s: float = 600.0
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def backoff(self, recent_restarts: int) -> float:
        return min(self.max_backoff_s, self.first_backoff_s * 2.0**recent_restarts)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    address: str = ""
    argv: list[str] = field(default_factory=list)  # as given, before any wrapping
    env: dict[str, str] = field(default_factory=dict)
    listens: bool = False
    # Run after the child died and before its restart (the worker's: put its unacknowledged tasks back).
    before_restart: Callable[[], None] | None = None
    restarts: list[float] = field(default_factory=list)  # monotonic times
    supervised: bool = False  # set once started: a child that dies while starting is its starter's to report


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Supervisor:
    def __init__(
        self,
        children: Sequence[Child],
        restart: Callable[[Child], None],
        give_up: Callable[[str], None],
        announce: Callable[[str], None],
        policy: RestartPolicy | None = None,
        poll_s: float = 0.2,
        logs: Callable[[Child], str] = lambda child: "",
    ) -> None:
        self.children = children  # the stack's own list: a child it starts later is watched too
        self.restart = restart
        self.give_up = give_up
        self.announce = announce
        self.policy = policy or RestartPolicy()
        self.poll_s = poll_s
        self.logs = logs
        self.failure = ""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Restart nothing more; returns once the thread has finished what it was doing (a restart included)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.poll_s):
                for child in list(self.children):
                    if not child.supervised or self._stopping.is_set():
                        continue
                    returncode = child.process.poll()  # reaps it
                    if returncode is not None and not self._died(child, returncode):
                        self._stopping.wait()  # the stack is stopping: its stop() ends this thread
                        return
        except Exception as exc:  # never die silently: a stack nobody watches must not go on
            self._fail(f"the supervisor failed: {exc!r}")
            self._stopping.wait()

    def _died(self, child: Child, returncode: int) -> bool:
        """Report and restart `child`; False when it died too often and the stack must stop."""
        pid, how, now, policy = child.process.pid, describe_exit(returncode), time.monotonic(), self.policy
        child.restarts = [t for t in child.restarts if now - t < policy.window_s]
        where = self.logs(child)
        if len(child.restarts) >= policy.max_restarts:
            self._fail(
                f"{child.name} (pid {pid}) {how}: {len(child.restarts) + 1} deaths within {policy.window_s:.0f} s,"
                f" past the {policy.max_restarts} restarts allowed; stopping the stack{where}"
            )
            return False
        delay = policy.backoff(len(child.restarts))
        self.announce(
            f"!! {child.name} (pid {pid}) {how}; restarting it in {delay:.1f} s (restart {len(child.restarts) + 1}"
            f" of at most {policy.max_restarts} within {policy.window_s:.0f} s){where}"
        )
        if self._stopping.wait(delay):
            return True
        child.restarts.append(time.monotonic())
        self.restart(child)
        self.announce(f"!! {child.name} restarted as pid {child.process.pid}")
        return True

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.announce(f"!! {reason}")
        self.give_up(reason)
