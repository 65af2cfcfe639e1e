"""The whole system on one machine: every service on 127.0.0.1 plus a Celery worker (`thinkmesh up`).

Each process is started in a process group of its own, so stopping the stack (Ctrl-C, SIGTERM, or leaving the
`with` block) ends everything it started — the sandbox's zygote and its children included — and nothing is
left behind. Services bind port 0 and announce their port on their first line; the stack wires the worker and
the SearchService to those ports.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.settings import load_settings
from services.trainer.settings import TrainerSettings

THINKMESH = [sys.executable, "-m", "services.cli"]


class _Interrupts:
    """While a child is being started, an interrupt waits: `Popen` returns only after the child runs, and a
    KeyboardInterrupt raised in between would leave the child untracked, alive after `stop()`."""

    deferred = 0
    pending = False


def _interrupt(signum: int, frame: object) -> None:
    if _Interrupts.deferred:
        _Interrupts.pending = True
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_deferred(*, discard: bool = False) -> Iterator[None]:
    """Interrupts inside the block wait for its end (`discard`: are dropped, e.g. a second Ctrl-C while stopping)."""
    _Interrupts.deferred += 1
    try:
        yield
    finally:
        _Interrupts.deferred -= 1
        if not _Interrupts.deferred and _Interrupts.pending:
            _Interrupts.pending = False
            if not discard:
                raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does, so a command's `finally: stack.stop()` runs either way.

    SIGTERM's default action ends the process at once and would leave every service it started running. Both
    signals wait while a child is being started (`_Interrupts`)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    address: str = ""


@dataclass
class LocalStack:
    state_dir: Path  # store, broker, logs
    env: Mapping[str, str] = field(default_factory=dict)
    announce: Callable[[str], None] = lambda line: None
    children: list[Child] = field(default_factory=list)

    @property
    def store(self) -> Path:
        return self.state_dir / "store"

    @property
    def broker_url(self) -> str:
        return f"sqla+sqlite:///{self.state_dir}/broker.sqlite"

    @property
    def result_backend(self) -> str:
        return f"db+sqlite:///{self.state_dir}/results.sqlite"

    def _env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "THINKMESH_STORE": str(self.store),
            "THINKMESH_SEARCH_BROKER_URL": self.broker_url,
            "THINKMESH_SEARCH_RESULT_BACKEND": self.result_backend,
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
        }
        env.update(self.env)
        return env

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str], *, listens: bool) -> Child:
        log = open(self.state_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - kept open by the child
        with _interrupts_deferred():
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE if listens else log, stderr=log, env=dict(env), start_new_session=True
            )
            child = Child(name, process)
            self.children.append(child)
        if listens:
            child.address = self._first_line(child, timeout=300).removeprefix("listening on ")
            self.announce(f"{name} listening on {child.address}")
        return child

    @staticmethod
    def _first_line(child: Child, timeout: float) -> str:
        assert child.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(child.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                line = child.process.stdout.readline().decode().strip()
                if line.startswith("listening on "):
                    return line
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}: see its log")
        raise TimeoutError(f"{child.name} did not start within {timeout}s")

    def start(self, *, with_search: bool = True) -> str:
        """Start everything; returns the SearchService's address ("" without it)."""
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        env = self._env()
        serve = [*THINKMESH, "serve"]
        sandbox = self._spawn("sandbox", [*serve, "sandbox", "--port", "0"], env, listens=True)
        policy = self._spawn("policy", [*serve, "policy", "--port", "0"], env, listens=True)
        ppm = self._spawn("ppm", [*serve, "ppm", "--port", "0"], env, listens=True)
        env.update(
            THINKMESH_SEARCH_SANDBOX_TARGET=sandbox.address,
            THINKMESH_SEARCH_POLICY_TARGET=policy.address,
            THINKMESH_SEARCH_PPM_TARGET=ppm.address,
        )
        self._spawn("worker", [*THINKMESH, "worker"], env, listens=False)
        if not with_search:
            return ""
        search = self._spawn("search", [*serve, "search", "--port", "0"], env, listens=True)
        return search.address

    def start_teacher(self, target: str, *, model: str = "", few_shot: int = 2) -> str:
        """A teacher PolicyService for a first round; returns its address. `target`: an OpenAI-compatible
        endpoint (http…: the openai backend, with `few_shot` worked examples before each prompt), a model
        directory (served by the hf backend), or the address of a PolicyService already running (used as is)."""
        if target.startswith(("http://", "https://")):
            env = {
                "THINKMESH_POLICY_BACKEND": "openai",
                "THINKMESH_POLICY_OPENAI_BASE_URL": target,
                "THINKMESH_POLICY_OPENAI_MODEL": model,
                "THINKMESH_POLICY_FEW_SHOT": str(few_shot),
            }
        elif Path(target).is_dir():
            env = {"THINKMESH_POLICY_MODEL": str(Path(target).resolve())}
        else:
            return target
        teacher = self._spawn(
            "teacher", [*THINKMESH, "serve", "policy", "--port", "0"], {**self._env(), **env}, listens=True
        )
        return teacher.address

    def address(self, name: str) -> str:
        return next(child.address for child in self.children if child.name == name)

    def stop(self, grace: float = 25.0) -> None:
        """SIGTERM every process group (newest first), then SIGKILL whatever is left after `grace` seconds.

        Another Ctrl-C or SIGTERM meanwhile does not cut this short: `grace` bounds it."""
        with _interrupts_deferred(discard=True):
            self._stop(grace)

    def _stop(self, grace: float) -> None:
        for child in reversed(self.children):
            _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(child.process, signal.SIGKILL)  # the group may hold grandchildren
            if child.process.poll() is None:
                child.process.wait()
            if child.process.stdout is not None:
                child.process.stdout.close()
        self.children.clear()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def local_trainer_settings(stack: LocalStack) -> TrainerSettings:
    """Settings for a trainer that drives a `LocalStack`: its SQLite broker and results, its services."""
    return load_settings(
        TrainerSettings,
        broker_url=stack.broker_url,
        result_backend=stack.result_backend,
        policy_target=stack.address("policy"),
        ppm_target=stack.address("ppm"),
        sandbox_target=stack.address("sandbox"),
    )
