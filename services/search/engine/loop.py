"""A long-running orchestrator for a worker: searches submitted at any time (Celery tasks on one worker) join the
next tick, so they share every batch sent to the policy, sandbox and PPM."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.search.engine.backends import Generator
from services.search.engine.mcts import Execute, Expand, Grade, Score, Tree
from services.search.engine.orchestrator import Orchestrator, Progress, RunStats, Sampling, StageStats

log = logging.getLogger(__name__)


@dataclass
class _Submission:
    trees: Sequence[Tree]
    deadline: float | None
    cancelled: asyncio.Event | None
    progress: Progress | None
    done: asyncio.Future[RunStats]
    stats: RunStats = field(default_factory=RunStats)
    started: float = field(default_factory=time.monotonic)

    def expired(self) -> bool:
        late = self.deadline is not None and time.monotonic() >= self.deadline
        return late or (self.cancelled is not None and self.cancelled.is_set())


class SearchLoop:
    """A long-running orchestrator: searches submitted at any time join the next tick, so concurrent requests
    (Celery tasks on one worker, Solve calls) share every batch. Each submission returns when its own trees are
    done, its deadline passes or it is cancelled."""

    _STAGES: tuple[tuple[str, type], ...] = (
        ("policy", Expand),
        ("sandbox", Execute),
        ("ppm", Score),
        ("grade", Grade),
    )

    def __init__(self, orchestrator: Orchestrator, seed: int = 0) -> None:
        self.orchestrator = orchestrator
        self.seed = seed
        self.stats = RunStats()
        self._submissions: list[_Submission] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(
        self,
        trees: Sequence[Tree],
        *,
        deadline: float | None = None,
        cancelled: asyncio.Event | None = None,
        progress: Progress | None = None,
        sampling: Sampling | None = None,
        generator: Generator | None = None,
    ) -> RunStats:
        """Search `trees` in the shared ticks; `sampling` and `generator` override the loop's for them (a task's
        own)."""
        done: asyncio.Future[RunStats] = asyncio.get_running_loop().create_future()
        self.orchestrator.sample(trees, sampling, generator)
        self._submissions.append(_Submission(trees, deadline, cancelled, progress, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        return await done

    def _retire_finished(self) -> None:
        for submission in list(self._submissions):
            finished = all(t.done for t in submission.trees)
            if finished or submission.expired():
                submission.stats.stopped_early = not finished
                submission.stats.wall_seconds = time.monotonic() - submission.started
                submission.stats.policy_version = self.stats.policy_version
                submission.stats.ppm_version = self.stats.ppm_version
                self._submissions.remove(submission)
                self.orchestrator.forget(submission.trees)
                if not submission.done.done():
                    submission.done.set_result(submission.stats)

    async def _run(self) -> None:
        while True:
            self._retire_finished()
            if not self._submissions:
                self._wake.clear()
                await self._wake.wait()
                continue
            active = [(s, t) for s in self._submissions for t in s.trees if not t.done]
            self._count(active)
            self.stats.ticks += 1
            try:
                await self.orchestrator.tick([t for _, t in active], self.stats, self.seed + self.stats.ticks)
            except Exception as exc:  # a failed backend call fails the searches of this tick, not the loop
                for submission in {id(s): s for s, _ in active}.values():
                    self._submissions.remove(submission)
                    self.orchestrator.forget(submission.trees)
                    if not submission.done.done():
                        submission.done.set_exception(exc)
                continue
            for submission in {id(s): s for s, _ in active}.values():
                if submission.progress is not None:
                    try:
                        submission.progress(submission.trees, submission.stats)
                    except Exception:  # a broken progress report must not stop the searches
                        log.exception("progress callback failed")

    def _count(self, active: list[tuple[_Submission, Tree]]) -> None:
        """Per submission: the calls it took part in and its items in them."""
        for submission in {id(s): s for s, _ in active}.values():
            submission.stats.ticks += 1
            mine = [t for s, t in active if s is submission]
            for name, kind in self._STAGES:
                needs = [t.need for t in mine if isinstance(t.need, kind)]
                if needs:
                    stage: StageStats = getattr(submission.stats, name)
                    stage.calls += 1
                    stage.items += sum(_items(need) for need in needs)


def _items(need: object) -> int:
    """Items a need puts into its backend call: one prompt, or one per node."""
    return 1 if isinstance(need, Expand) else len(getattr(need, "nodes", ()))
