"""A worker process's search runtime: one asyncio loop in a thread, one SearchLoop over gRPC backends.

Celery runs tasks in threads (`--pool threads`); every task hands its search to this one loop, so the trees
of all tasks running on a worker advance together and share each batch sent to the policy, sandbox and PPM.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from services.common.channels import open_channel
from services.search.answers import Method, choose
from services.search.backends import Backends, GrpcGenerator, GrpcRunner, GrpcScorer, ProcessGrader
from services.search.mcts import SearchConfig, Tree
from services.search.orchestrator import Orchestrator, RunStats, Sampling, SearchLoop
from services.search.settings import SearchSettings


def search_config(settings: SearchSettings, request: dict[str, Any]) -> SearchConfig:
    return SearchConfig(
        rollouts=int(request.get("rollouts") or settings.rollouts),
        candidates=int(request.get("candidates") or settings.candidates),
        max_depth=int(request.get("max_depth") or settings.max_depth),
        c=settings.c,
        q_mode=request.get("q_mode") or settings.q_mode,  # type: ignore[arg-type]
        max_code_errors=int(request.get("max_code_errors", 1)),
        seed=int(request.get("seed", 0)),
    )


def summarise(trees: list[Tree], stats: RunStats, method: Method, *, include_trees: bool) -> dict[str, Any]:
    """The JSON result of a solve: answer, trajectory, score, stats (and the trees, for training)."""
    choice = choose(trees, method)
    result: dict[str, Any] = {
        "answer": choice.answer if choice else "",
        "solution": choice.solution if choice else "",
        "score": choice.score if choice else 0.0,
        "stats": {
            "rollouts": sum(t.stats.rollouts for t in trees),
            "nodes": sum(t.stats.nodes for t in trees),
            "policy_calls": stats.policy.calls,
            "sandbox_runs": stats.sandbox.items,
            "ppm_calls": stats.ppm.calls,
            "wall_ms": int(stats.wall_seconds * 1000),
        },
        "policy_version": stats.policy_version,
        "ppm_version": stats.ppm_version,
        "stopped_early": stats.stopped_early,
        "run": stats.as_dict(),
    }
    if include_trees:
        result["trees"] = [t.to_json() for t in trees]
    return result


class WorkerRuntime:
    _instance: WorkerRuntime | None = None
    _lock = threading.Lock()

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
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

    async def _build(self) -> SearchLoop:
        s = self.settings
        tls = s.client_tls
        backends = Backends(
            generator=GrpcGenerator(open_channel(s.policy_target, tls=tls)),
            runner=GrpcRunner(open_channel(s.sandbox_target, tls=tls)),
            scorer=GrpcScorer(open_channel(s.ppm_target, tls=tls)),
            grader=ProcessGrader(),
        )
        sampling = Sampling(s.temperature, s.max_new_tokens, s.exec_timeout_ms)
        return SearchLoop(Orchestrator(backends, sampling))

    def solve(
        self,
        request: dict[str, Any],
        *,
        progress: Callable[[dict[str, Any]], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Blocking (called from a Celery thread): search one problem on the shared loop."""
        return asyncio.run_coroutine_threadsafe(self._solve(request, progress, is_cancelled), self.loop).result()

    async def _solve(
        self,
        request: dict[str, Any],
        progress: Callable[[dict[str, Any]], None] | None,
        is_cancelled: Callable[[], bool] | None,
    ) -> dict[str, Any]:
        config = search_config(self.settings, request)
        searches = int(request.get("searches") or self.settings.searches)
        reference = request.get("reference") or None
        trees = [
            Tree(request["question"], SearchConfig(**{**asdict(config), "seed": config.seed + 1_000 * i}), reference)
            for i in range(searches)
        ]
        deadline_epoch = request.get("deadline")
        deadline = time.monotonic() + (float(deadline_epoch) - time.time()) if deadline_epoch else None
        cancelled = asyncio.Event()
        method: Method = request.get("method") or self.settings.answer_method  # type: ignore[assignment]
        last_report = 0.0

        def on_tick(trees_: Any, stats: RunStats) -> None:
            nonlocal last_report
            now = time.monotonic()
            if now - last_report < 0.5:  # progress and cancellation checks, at most twice a second
                return
            last_report = now
            if is_cancelled is not None and is_cancelled():
                cancelled.set()
            if progress is not None:
                choice = choose(trees, method)
                progress(
                    {
                        "rollouts_done": sum(t.stats.rollouts for t in trees),
                        "rollouts_total": config.rollouts * searches,
                        "best_answer": choice.answer if choice else "",
                        "best_score": choice.score if choice else 0.0,
                    }
                )

        stats = await self.search_loop.submit(trees, deadline=deadline, cancelled=cancelled, progress=on_tick)
        return summarise(trees, stats, method, include_trees=bool(request.get("include_trees")))
