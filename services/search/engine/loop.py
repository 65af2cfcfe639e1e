"""A long-running orchestrator for a worker: searches submitted at any time (Celery tasks on one worker) join the
next tick, so they share every batch sent to the policy, sandbox and PPM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.search.engine.backends import Generator
from services.search.engine.mcts import Execute, Expand, Grade, Score, Tree
from services.search.engine.orchestrator import Orchestrator, Progress, RunStats, Sampling, StageStats

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Submission:
    trees: Sequence[Tree]
    deadline: float | None
    cancelled: asyncio.Event | None
    progress: Progress | None
    done: asyncio.Future[RunStats]
    stats: RunStats = field(default_factory=RunStats)
    started: float = field(default_factory=time.monotonic)
    # What stops it between ticks: a timer at its deadline, a watcher of its cancel event.
    timer: asyncio.TimerHandle | None = None
    watcher: asyncio.Task[None] | None = None

    def expired(self) -> bool:
        late = self.deadline is not None and time.monotonic() >= self.deadline
        return late or (self.cancelled is not None and self.cancelled.is_set())


class SearchLoop:
    """A long-running orchestrator: searches submitted at any time join the next tick, so concurrent requests
    (Celery tasks on one worker, Solve calls) share every batch. Each submission returns when its own trees are
    done, its deadline passes or it is cancelled — at that moment, even in the middle of a tick: one tick of many
    busy trees can take seconds, and a search answers with its best so far when its time is up, not after the
    tick. A tick whose every submission has returned is cancelled, so nobody waits for work nobody will read."""

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
        self._tick: asyncio.Task[None] | None = None  # the tick in flight
        self._ticking: list[_Submission] = []  # whose trees it advances

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
        """Search `trees` in the shared ticks until they are done, the monotonic `deadline` passes or `cancelled`
        is set; `sampling` and `generator` override the loop's for them (a task's own)."""
        loop = asyncio.get_running_loop()
        submission = _Submission(trees, deadline, cancelled, progress, loop.create_future())
        if submission.expired():  # its time was up before it began: no work at all
            self._finish(submission)
            return await submission.done
        self.orchestrator.sample(trees, sampling, generator)
        self._submissions.append(submission)
        if deadline is not None:
            submission.timer = loop.call_later(max(0.0, deadline - time.monotonic()), self._finish, submission)
        if cancelled is not None:
            submission.watcher = asyncio.create_task(self._watch(submission, cancelled))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        return await submission.done

    async def _watch(self, submission: _Submission, cancelled: asyncio.Event) -> None:
        await cancelled.wait()
        self._finish(submission)

    def _finish(self, submission: _Submission) -> None:
        """Return `submission` with what its trees hold now (idempotent)."""
        if submission.done.done():
            return
        if submission.timer is not None:
            submission.timer.cancel()
        if submission.watcher is not None and submission.watcher is not asyncio.current_task():
            submission.watcher.cancel()
        if submission in self._submissions:
            self._submissions.remove(submission)
        self.orchestrator.forget(submission.trees)
        submission.stats.stopped_early = not all(t.done for t in submission.trees)
        submission.stats.wall_seconds = time.monotonic() - submission.started
        submission.stats.policy_version = self.stats.policy_version
        submission.stats.ppm_version = self.stats.ppm_version
        submission.done.set_result(submission.stats)
        if self._tick is not None and not any(s in self._submissions for s in self._ticking):
            self._tick.cancel()

    def _retire_finished(self) -> None:
        for submission in list(self._submissions):
            if all(t.done for t in submission.trees) or submission.expired():
                self._finish(submission)

    async def _run(self) -> None:
        while True:
            self._retire_finished()
            if not self._submissions:
                self._wake.clear()
                await self._wake.wait()
                continue
            active = [(s, t) for s in self._submissions for t in s.trees if not t.done]
            ticking = list({id(s): s for s, _ in active}.values())
            self._count(active)
            self.stats.ticks += 1
            self._tick = tick = asyncio.create_task(
                self.orchestrator.tick([t for _, t in active], self.stats, self.seed + self.stats.ticks)
            )
            self._ticking = ticking
            try:
                await asyncio.wait([tick])
            except asyncio.CancelledError:  # the loop itself is closing
                tick.cancel()
                raise
            finally:
                self._tick, self._ticking = None, []
            if tick.cancelled():  # every search of this tick had returned
                continue
            live = [s for s in ticking if s in self._submissions]
            failure = tick.exception()
            if failure is not None:  # a failed backend call fails the searches of this tick, not the loop
                for submission in live:
                    self._fail(submission, failure)
                continue
            for submission in live:
                if submission.progress is not None:
                    try:
                        submission.progress(submission.trees, submission.stats)
                    except Exception:  # a broken progress report must not stop the searches
                        log.exception("progress callback failed")

    def _fail(self, submission: _Submission, failure: BaseException) -> None:
        if submission.timer is not None:
            submission.timer.cancel()
        if submission.watcher is not None:
            submission.watcher.cancel()
        self._submissions.remove(submission)
        self.orchestrator.forget(submission.trees)
        with contextlib.suppress(asyncio.InvalidStateError):
            submission.done.set_exception(failure)

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
