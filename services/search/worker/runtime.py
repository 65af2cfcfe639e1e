"""A worker process's search runtime: one asyncio loop in a thread, one SearchLoop over gRPC backends.

Celery runs tasks in threads (`--pool threads`); every task hands its search to this one loop, so the trees
of all tasks running on a worker advance together and share each batch sent to the policy, sandbox and PPM.
The worker closes the runtime when it shuts down (services/search/worker/main.py): its channels, its grader's
processes and the loop's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from services.common.channels import AFFINITY_HEADER, open_channel
from services.common.errors import InvalidInput
from services.search.engine.answers import Method, choose
from services.search.engine.backends import Backends
from services.search.engine.loop import SearchLoop
from services.search.engine.mcts import SearchConfig, Tree
from services.search.engine.orchestrator import Orchestrator, RunStats, Sampling
from services.search.grader import ProcessGrader
from services.search.protocol import SolveProgress, SolveResult, SolveTask
from services.search.settings import SearchSettings
from services.search.worker.clients import GrpcGenerator, GrpcRunner, GrpcScorer

log = logging.getLogger(__name__)

# How often a running search publishes its progress and looks at its cancel flag.
REPORT_S = 0.5


def search_config(task: SolveTask, defaults: SearchConfig) -> SearchConfig:
    """The engine's configuration for a task whose knobs are filled (`SolveTask.with_defaults`): the task's knobs
    over the tier's `SearchConfig` (which alone sets what a task does not carry, such as the UCT constant)."""
    return replace(
        defaults,
        rollouts=task.rollouts,
        candidates=task.candidates,
        max_depth=task.max_depth,
        q_mode=task.q_mode,  # type: ignore[arg-type]
        max_code_errors=task.max_code_errors,
        seed=task.seed,
    )


MAX_OTHER_POLICIES = 4


def task_sampling(task: SolveTask, settings: SearchSettings) -> Sampling | None:
    """The task's own sampling of the policy over the worker's (None: the worker's as it is)."""
    if task.temperature is None and not task.max_new_tokens:
        return None
    base = settings.sampling
    return replace(
        base,
        temperature=base.temperature if task.temperature is None else task.temperature,
        max_new_tokens=task.max_new_tokens or base.max_new_tokens,
    )


def summarise(trees: list[Tree], stats: RunStats, method: Method, *, include_trees: bool) -> SolveResult:
    """The result of a solve: answer, trajectory, score, stats (and the trees, for training)."""
    choice = choose(trees, method)
    return SolveResult(
        answer=choice.answer if choice else "",
        solution=choice.solution if choice else "",
        score=choice.score if choice else 0.0,
        stats={
            "rollouts": sum(t.stats.rollouts for t in trees),
            "nodes": sum(t.stats.nodes for t in trees),
            "policy_calls": stats.policy.calls,
            "sandbox_runs": stats.sandbox.items,
            "ppm_calls": stats.ppm.calls,
            "wall_ms": int(stats.wall_seconds * 1000),
        },
        policy_version=stats.policy_version,
        ppm_version=stats.ppm_version,
        stopped_early=stats.stopped_early,
        run=stats.as_dict(),
        trees=tuple(t.to_json() for t in trees) if include_trees else None,
    )


class _Latest:
    """The latest progress of one search: written on the loop's thread, read on its task's."""

    progress: SolveProgress | None = None


class WorkerRuntime:
    _instance: WorkerRuntime | None = None
    _lock = threading.Lock()

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self._channels: list[Any] = []
        self._policies: dict[str, GrpcGenerator] = {}  # other PolicyServices tasks named (a teacher), by target
        self._grader = ProcessGrader()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="search-loop", daemon=True)
        self._thread.start()
        self.search_loop: SearchLoop = asyncio.run_coroutine_threadsafe(self._build(), self.loop).result()

    @classmethod
    def get(cls, settings: SearchSettings) -> WorkerRuntime:
        with cls._lock:
            if cls._instance is None:
                cls._instance = WorkerRuntime(settings)
            return cls._instance

    @classmethod
    def close_shared(cls) -> None:
        """Close the process's runtime, if a task ever built one (the worker's shutdown)."""
        with cls._lock:
            runtime, cls._instance = cls._instance, None
        if runtime is not None:
            runtime.close()

    async def _build(self) -> SearchLoop:
        s = self.settings
        tls = s.client_tls
        self._channels = [
            self._policy_channel(s.targets.policy_target),
            open_channel(s.targets.sandbox_target, tls=tls),
            open_channel(s.targets.ppm_target, tls=tls),
        ]
        policy, sandbox, ppm = self._channels
        backends = Backends(
            generator=GrpcGenerator(policy, affinity=self._affinity),
            runner=GrpcRunner(sandbox),
            scorer=GrpcScorer(ppm),
            grader=self._grader,
        )
        return SearchLoop(Orchestrator(backends, s.sampling))

    @property
    def _affinity(self) -> bool:
        return self.settings.policy_routing == "affinity"

    def _policy_channel(self, target: str) -> Any:
        """A channel to a PolicyService, balanced as `policy_routing` says."""
        header = AFFINITY_HEADER if self._affinity else None
        return open_channel(target, tls=self.settings.client_tls, affinity_header=header)

    def _policy(self, target: str) -> GrpcGenerator | None:
        """The generator of a task's own PolicyService (None: the worker's); one channel per target, kept."""
        if not target or target == self.settings.targets.policy_target:
            return None
        if target not in self._policies:
            if len(self._policies) >= MAX_OTHER_POLICIES:
                raise InvalidInput(f"a worker talks to at most {MAX_OTHER_POLICIES} other policy services")
            channel = self._policy_channel(target)
            self._channels.append(channel)
            self._policies[target] = GrpcGenerator(channel, affinity=self._affinity)
        return self._policies[target]

    def close(self) -> None:
        """Stop the loop's work, close the channels and the grader's processes, end the loop's thread."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=10)
        self._grader.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

    async def _close(self) -> None:
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for channel in self._channels:
            await channel.close()

    def solve(
        self,
        task: SolveTask,
        *,
        progress: Callable[[SolveProgress], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> SolveResult:
        """Blocking (called from a Celery thread): search one problem on the shared loop.

        This thread, not the loop's, talks to the result backend: every REPORT_S it publishes the search's latest
        progress (its best answer so far: what the SearchService answers with if the result itself comes late) and
        looks at the cancel flag. A slow backend then delays one task's reports, never every task's ticks."""
        cancelled = asyncio.Event()  # set on the loop's thread only
        latest = _Latest()
        future = asyncio.run_coroutine_threadsafe(self._solve(task, cancelled, latest), self.loop)
        published: SolveProgress | None = None
        while True:
            concurrent.futures.wait([future], timeout=REPORT_S)
            if future.done():
                return future.result()
            try:
                if is_cancelled is not None and is_cancelled():
                    self.loop.call_soon_threadsafe(cancelled.set)
                report = latest.progress
                if progress is not None and report is not None and report != published:
                    progress(report)
                    published = report
            except Exception:  # the result backend is down: the search goes on and stops at its deadline
                log.warning("could not report the progress of a search or read its cancel flag", exc_info=True)

    async def _solve(self, task: SolveTask, cancelled: asyncio.Event, latest: _Latest) -> SolveResult:
        task = task.with_defaults(self.settings)
        config = search_config(task, self.settings.search)
        trees = [
            Tree(task.question, replace(config, seed=config.seed + 1_000 * i), task.reference)
            for i in range(task.searches)
        ]
        # The task's own stop time, and at the latest task_time_limit_s from now: a task still running when the
        # broker's visibility timeout passes would be handed to another worker and searched twice.
        now = time.monotonic()
        limit = now + self.settings.time_limit_s
        deadline = min(limit, now + (task.deadline - time.time())) if task.deadline else limit
        method: Method = task.method  # type: ignore[assignment]
        last_report = 0.0

        def on_tick(trees_: Any, stats: RunStats) -> None:
            nonlocal last_report
            now = time.monotonic()
            if now - last_report < REPORT_S:  # the best so far, at most as often as it is published
                return
            last_report = now
            choice = choose(trees, method)
            latest.progress = SolveProgress(
                rollouts_done=sum(t.stats.rollouts for t in trees),
                rollouts_total=config.rollouts * task.searches,
                best_answer=choice.answer if choice else "",
                best_score=choice.score if choice else 0.0,
                best_solution=choice.solution if choice else "",
            )

        stats = await self.search_loop.submit(
            trees,
            deadline=deadline,
            cancelled=cancelled,
            progress=on_tick,
            sampling=task_sampling(task, self.settings),
            generator=self._policy(task.policy_target),
        )
        return summarise(trees, stats, method, include_trees=task.include_trees)
