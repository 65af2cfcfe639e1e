"""The whole system on one machine: every service on 127.0.0.1 plus a Celery worker (`thinkmesh up`).

Each process is started in a process group of its own, so stopping the stack (Ctrl-C, SIGTERM, or leaving the
`with` block) ends everything it started — the sandbox's zygote and its children included — and nothing is
left behind; newest first, so the worker stops before the services it calls. Services bind port 0 and announce
their port on their first line; the stack wires the worker and the SearchService to those ports.

Once started, the children are supervised (services/dev/supervisor.py): a child that dies is reaped, said loudly
and restarted on the same port after a backoff (a dead worker's unacknowledged tasks are put back in the queue
first, so they run again at once instead of after the broker's visibility timeout); one that keeps dying stops
the stack, and the command exits non-zero. Every child also gets SIGTERM from Linux when the stack's process dies
without stopping it (SIGKILL, a crash): services/common/die_with_parent.py.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common import die_with_parent
from services.common.settings import load_settings
from services.dev.supervisor import Child, RestartPolicy, Supervisor
from services.search.settings import QUEUES
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
    """Interrupts inside the block wait for its end (`discard`: are dropped, e.g. a second Ctrl-C while stopping).

    Only the main thread gets interrupts; another thread (the supervisor) must not raise the main thread's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
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
class LocalStack:
    state_dir: Path  # store, broker, logs
    env: Mapping[str, str] = field(default_factory=dict)
    announce: Callable[[str], None] = lambda line: None
    children: list[Child] = field(default_factory=list)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    # Why the supervisor stopped the stack ("" while it runs): the command then exits non-zero.
    failure: str = ""
    _supervisor: Supervisor | None = None

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

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _popen(self, name: str, argv: list[str], env: Mapping[str, str], *, pipe: bool) -> subprocess.Popen[bytes]:
        with open(self._log(name), "ab") as log:  # the child holds its own copy
            return subprocess.Popen(
                die_with_parent.command(argv),
                stdout=subprocess.PIPE if pipe else log,
                stderr=log,
                env=dict(env),
                start_new_session=True,
            )

    def _spawn(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        *,
        listens: bool,
        before_restart: Callable[[], None] | None = None,
    ) -> Child:
        with _interrupts_deferred():
            process = self._popen(name, argv, env, pipe=listens)
            child = Child(name, process, argv=list(argv), env=dict(env), listens=listens, before_restart=before_restart)
            self.children.append(child)
        if listens:
            child.address = self._first_line(child, timeout=300).removeprefix("listening on ")
            self.announce(f"{name} listening on {child.address}")
        child.supervised = True
        return child

    def _restart(self, child: Child) -> None:
        """The supervisor's restart: the same command and environment, a listening child on the port it had."""
        _signal_group(child.process, signal.SIGKILL)  # what the dead child started (its group) goes with it
        if child.before_restart is not None:
            try:
                child.before_restart()
            except Exception as exc:  # the restart matters more; the broker's visibility timeout still applies
                self.announce(f"!! before restarting {child.name}: {exc!r}")
        argv = _same_port(child.argv, child.address) if child.listens else child.argv
        if child.process.stdout is not None:
            child.process.stdout.close()
        # Its first line goes to its log: the address is known already.
        child.process = self._popen(child.name, argv, child.env, pipe=False)

    def _requeue_worker_tasks(self, env: Mapping[str, str]) -> Callable[[], None]:
        """Put the tasks a dead worker took back in the queue. The stack's broker is its own and the worker its
        only consumer, so whatever is unacknowledged when no worker runs belongs to a dead one."""
        from services.search.celery_app import restore_unacknowledged
        from services.search.settings import CelerySettings

        broker_url = env["THINKMESH_SEARCH_BROKER_URL"]

        def requeue() -> None:
            if not broker_url.startswith(("sqla+", "sqlalchemy+")):
                return  # Redis: redelivered after its visibility timeout
            restored = restore_unacknowledged(CelerySettings(broker_url=broker_url))
            if restored:
                self.announce(f"!! {restored} unfinished task(s) of a dead worker put back in the queue")

        return requeue

    def _supervise(self) -> None:
        if self._supervisor is None:
            self._supervisor = Supervisor(
                self.children,
                restart=self._restart,
                give_up=self._give_up,
                announce=self.announce,
                policy=self.restart_policy,
                logs=lambda child: f" — see {self._log(child.name)}",
            )
            self._supervisor.start()

    def _give_up(self, reason: str) -> None:
        """A child died too often: the main thread is interrupted as by Ctrl-C, and its `finally: stop()` runs."""
        self.failure = reason
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

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

    def start(self, *, with_search: bool = True, worker_pools: Mapping[str, str] | None = None) -> str:
        """Start everything; returns the SearchService's address ("" without it). `worker_pools`: a worker per
        entry, its name → the queues it consumes ("solve", "round", "solve,round"), as the chart's pools; None:
        one worker, `worker`, on every queue."""
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
        requeue = self._requeue_worker_tasks(env)
        requeue()  # tasks a previous run's worker took with it when it was killed
        pools = worker_pools or {"worker": ",".join(QUEUES)}
        for name, queues in pools.items():
            argv = [*THINKMESH, "worker", "--queues", queues]
            # Putting back every unacknowledged task is right only for a lone worker: beside another pool it would
            # hand the live one's tasks out again. Several pools wait for the broker's visibility timeout instead.
            self._spawn(name, argv, env, listens=False, before_restart=requeue if len(pools) == 1 else None)
        search = self._spawn("search", [*serve, "search", "--port", "0"], env, listens=True) if with_search else None
        self._supervise()
        return search.address if search is not None else ""

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

    def kill(self, name: str) -> int:
        """SIGKILL a child's process group (a fault, for the benches: the supervisor restarts it); its pid."""
        child = next(c for c in self.children if c.name == name)
        pid = int(child.process.pid)
        os.killpg(pid, signal.SIGKILL)
        return pid

    def cpu_seconds(self, others: Mapping[int, str] | None = None) -> dict[str, float]:
        """CPU seconds (user + system) each child and its descendants have used so far, by child name
        (`process_tree_cpu`), and those of `others` (pid → name; an ancestor of the children counts without them).
        A child restarted since an earlier reading starts again from zero."""
        roots = {int(child.process.pid): child.name for child in self.children} | dict(others or {})
        return {roots[pid]: seconds for pid, seconds in process_tree_cpu(roots).items()}

    def stop(self, grace: float = 25.0) -> None:
        """Stop supervising, then stop each child in turn, newest first (the SearchService, the worker, then the
        services it calls): SIGTERM its process group and wait for it; SIGKILL the group once `grace` seconds have
        gone by in all (a child reached after that gets 1 s). Every child is reaped.

        Another Ctrl-C or SIGTERM meanwhile does not cut this short: `grace` bounds it."""
        with _interrupts_deferred(discard=True):
            if self._supervisor is not None:
                self._supervisor.stop()  # first: nothing is restarted while it stops
                self._supervisor = None
            self._stop(grace)

    def _stop(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            _signal_group(child.process, signal.SIGTERM)
            try:
                child.process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.announce(f"{child.name} (pid {child.process.pid}) did not stop in time: killed")
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


def _same_port(argv: list[str], address: str) -> list[str]:
    """`argv` with its `--port` set to the port of `address`, so that whoever was given the address finds the
    restarted service there."""
    if "--port" not in argv or not address:
        return argv
    at = argv.index("--port") + 1
    return [*argv[:at], address.rsplit(":", 1)[1], *argv[at + 1 :]]


def process_tree_cpu(roots: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) each root process and its descendants have used, by root pid, from /proc
    (Linux; zero where it is absent); a process counts for its nearest root only, so a root inside another's tree
    is not counted twice. Descendants are found by parent pid, so a child that started a session of
    its own (the sandbox's zygote and its runs) still counts; ended children count through the `cutime`/`cstime`
    of the process that reaped them."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name is in parentheses and may hold spaces: the fields that follow start after the last ")".
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        used[pid] = sum(int(f) for f in fields[11:15]) / tick  # utime, stime, cutime, cstime
    wanted = set(roots)
    totals = dict.fromkeys(wanted, 0.0)
    for pid, seconds in used.items():
        ancestor, hops = pid, 0
        while ancestor not in wanted and ancestor in parent and hops < 64:
            ancestor, hops = parent[ancestor], hops + 1
        if ancestor in wanted:
            totals[ancestor] += seconds
    return totals


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
