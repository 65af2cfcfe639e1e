"""Drives many search trees at once, batching their needs across trees: one tick gathers every pending
expansion into one GenerateSteps call, every new node's program into one ExecuteBatch and every new node into
one ScoreSteps call (the authors' scripts advance all trees in lock-step inside one process; here the same
happens across services). The four kinds of call of one tick run concurrently.

`batched=False` makes one call per node instead, one after another — the baseline of `thinkmesh bench search`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import Histogram

from services.search.engine.answers import DEFAULT_METHOD, Choice, Method, choose
from services.search.engine.backends import Backends, Generator, Prompt
from services.search.engine.mcts import Candidate, Execute, Expand, Grade, Score, SearchConfig, Tree

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "thinkmesh_search_batch_size",
    "Items per backend call of a search tick",
    ["stage"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
STAGE_SECONDS = Histogram("thinkmesh_search_stage_seconds", "Wall time of one backend call", ["stage"])


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    max_new_tokens: int = 256
    exec_timeout_ms: int = 10_000
    # Items per backend call: at most what the services accept by default (sandbox and policy: 256).
    max_batch: int = 256


@dataclass
class StageStats:
    calls: int = 0
    items: int = 0
    seconds: float = 0.0

    def add(self, items: int, seconds: float) -> None:
        self.calls += 1
        self.items += items
        self.seconds += seconds


@dataclass
class RunStats:
    ticks: int = 0
    policy: StageStats = field(default_factory=StageStats)
    sandbox: StageStats = field(default_factory=StageStats)
    ppm: StageStats = field(default_factory=StageStats)
    grade: StageStats = field(default_factory=StageStats)
    engine_seconds: float = 0.0  # time spent inside the pure MCTS code
    wall_seconds: float = 0.0
    tokens: int = 0
    policy_version: str = ""
    ppm_version: str = ""
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            **{
                f"{name}_{key}": getattr(getattr(self, name), key)
                for name in ("policy", "sandbox", "ppm", "grade")
                for key in ("calls", "items", "seconds")
            },
            "engine_seconds": self.engine_seconds,
            "wall_seconds": self.wall_seconds,
            "tokens": self.tokens,
            "stopped_early": self.stopped_early,
        }


Progress = Callable[[Sequence[Tree], RunStats], None]
N = TypeVar("N", Expand, Execute, Score, Grade)


def _waiting(trees: Sequence[Tree], kind: type[N]) -> list[tuple[Tree, N]]:
    return [(tree, tree.need) for tree in trees if isinstance(tree.need, kind)]


class Orchestrator:
    def __init__(self, backends: Backends, sampling: Sampling = Sampling(), *, batched: bool = True) -> None:
        self.backends = backends
        self.sampling = sampling
        self.batched = batched
        # Trees whose search asks the policy otherwise, by id: a task's own temperature or step length, or
        # another policy altogether (a teacher model for a first round).
        self._sampling_of: dict[int, Sampling] = {}
        self._generator_of: dict[int, Generator] = {}

    def sampling_for(self, tree: Tree) -> Sampling:
        return self._sampling_of.get(id(tree), self.sampling)

    def generator_for(self, tree: Tree) -> Generator:
        return self._generator_of.get(id(tree), self.backends.generator)

    def sample(self, trees: Sequence[Tree], sampling: Sampling | None, generator: Generator | None = None) -> None:
        """Ask the policy for these trees with `sampling`, of `generator` (None: this orchestrator's) until
        `forget`."""
        if sampling is not None and sampling != self.sampling:
            self._sampling_of.update((id(tree), sampling) for tree in trees)
        if generator is not None:
            self._generator_of.update((id(tree), generator) for tree in trees)

    def forget(self, trees: Sequence[Tree]) -> None:
        for tree in trees:
            self._sampling_of.pop(id(tree), None)
            self._generator_of.pop(id(tree), None)

    async def run(
        self,
        trees: Sequence[Tree],
        *,
        deadline: float | None = None,
        cancelled: asyncio.Event | None = None,
        progress: Progress | None = None,
        seed: int = 0,
        sampling: Sampling | None = None,
    ) -> RunStats:
        """Advance every tree until all are done, the monotonic `deadline` passes, or `cancelled` is set."""
        self.sample(trees, sampling)
        try:
            return await self._run(trees, deadline, cancelled, progress, seed)
        finally:
            self.forget(trees)

    async def _run(
        self,
        trees: Sequence[Tree],
        deadline: float | None,
        cancelled: asyncio.Event | None,
        progress: Progress | None,
        seed: int,
    ) -> RunStats:
        stats = RunStats()
        started = time.monotonic()
        while True:
            active = [t for t in trees if not t.done]
            if not active:
                break
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if out_of_time or (cancelled is not None and cancelled.is_set()):
                stats.stopped_early = True
                break
            stats.ticks += 1
            await self.tick(active, stats, seed + stats.ticks)
            if progress is not None:
                progress(trees, stats)
        stats.wall_seconds = time.monotonic() - started
        return stats

    async def tick(self, active: Sequence[Tree], stats: RunStats, seed: int) -> None:
        """One step of every active tree: the four kinds of need, each in one call (or one per node)."""
        await asyncio.gather(
            self._expand(_waiting(active, Expand), stats, seed),
            self._execute(_waiting(active, Execute), stats),
            self._score(_waiting(active, Score), stats),
            self._grade(_waiting(active, Grade), stats),
        )

    async def _calls(self, groups: list[list[Any]], call: Callable[[list[Any]], Any]) -> list[Any]:
        """One call with everything (batched), or one call per item."""
        if self.batched:
            # One call per tick, cut into chunks no server refuses (each service bounds its batch and its
            # queue), sent one after another so a tick never floods a service's queue.
            items = [item for group in groups for item in group]
            size = self.sampling.max_batch
            return [await call(items[i : i + size]) for i in range(0, len(items), size)]
        # The naive baseline: each node's call waits for the previous one.
        return [await call([item]) for group in groups for item in group]

    @staticmethod
    def _timed(stage: str, stats: StageStats, items: int, started: float) -> None:
        elapsed = time.monotonic() - started
        stats.add(items, elapsed)
        BATCH_SIZE.labels(stage).observe(items)
        STAGE_SECONDS.labels(stage).observe(elapsed)

    async def _expand(self, waiting: list[tuple[Tree, Expand]], stats: RunStats, seed: int) -> None:
        # Trees may ask for different numbers of candidates, or sample otherwise: one call per distinct kind.
        by_kind: dict[tuple[Generator, int, float, int], list[tuple[Tree, Expand]]] = {}
        for tree, need in waiting:
            sampling = self.sampling_for(tree)
            kind = (self.generator_for(tree), tree.config.candidates, sampling.temperature, sampling.max_new_tokens)
            by_kind.setdefault(kind, []).append((tree, need))
        for (generator, n, temperature, max_new_tokens), group in by_kind.items():
            prompts = [Prompt(tree.question, need.steps) for tree, need in group]

            async def call(
                batch: list[Prompt],
                n: int = n,
                t: float = temperature,
                length: int = max_new_tokens,
                policy: Generator = generator,
            ) -> Any:
                started = time.monotonic()
                result = await policy.generate(batch, n, t, length, seed)
                self._timed("policy", stats.policy, len(batch), started)
                return result

            replies = await self._calls([[p] for p in prompts], call)
            rows = [row for rows, _ in replies for row in rows]
            stats.policy_version = replies[-1][1]
            began = time.monotonic()
            for (tree, _), row in zip(group, rows, strict=True):
                stats.tokens += sum(s.num_tokens for s in row)
                tree.deliver_candidates([Candidate(s.text, s.finished, s.num_tokens, s.logprob) for s in row])
            stats.engine_seconds += time.monotonic() - began

    async def _execute(self, waiting: list[tuple[Tree, Execute]], stats: RunStats) -> None:
        if not waiting:
            return
        trees = [tree for tree, _ in waiting]
        groups = [list(need.programs) for _, need in waiting]

        async def call(batch: list[str]) -> Any:
            started = time.monotonic()
            result = await self.backends.runner.run(batch, self.sampling.exec_timeout_ms)
            self._timed("sandbox", stats.sandbox, len(batch), started)
            return result

        results = [r for reply in await self._calls(groups, call) for r in reply]
        began = time.monotonic()
        cursor = 0
        for tree, group in zip(trees, groups, strict=True):
            tree.deliver_executions(results[cursor : cursor + len(group)])
            cursor += len(group)
        stats.engine_seconds += time.monotonic() - began

    async def _score(self, waiting: list[tuple[Tree, Score]], stats: RunStats) -> None:
        if not waiting:
            return
        trees = [tree for tree, _ in waiting]
        groups = [[Prompt(tree.question, steps) for steps in need.steps] for tree, need in waiting]

        async def call(batch: list[Prompt]) -> Any:
            started = time.monotonic()
            result = await self.backends.scorer.score(batch)
            self._timed("ppm", stats.ppm, len(batch), started)
            return result

        replies = await self._calls(groups, call)
        stats.ppm_version = replies[-1][1]
        # Each item scores every step of its path; the new node's score is the last one.
        scores = [row[-1] for rows, _ in replies for row in rows]
        began = time.monotonic()
        cursor = 0
        for tree, group in zip(trees, groups, strict=True):
            tree.deliver_scores(scores[cursor : cursor + len(group)])
            cursor += len(group)
        stats.engine_seconds += time.monotonic() - began

    async def _grade(self, waiting: list[tuple[Tree, Grade]], stats: RunStats) -> None:
        if not waiting:
            return
        trees = [tree for tree, _ in waiting]
        groups = [[(tree.reference or "", answer) for answer in need.answers] for tree, need in waiting]
        started = time.monotonic()
        verdicts = await self.backends.grader.grade([pair for group in groups for pair in group])
        self._timed("grade", stats.grade, len(verdicts), started)
        cursor = 0
        for tree, group in zip(trees, groups, strict=True):
            tree.deliver_grades(verdicts[cursor : cursor + len(group)])
            cursor += len(group)


@dataclass(frozen=True)
class SearchProblem:
    """One problem for an in-process search (evaluation, benchmarks); a worker's comes as a protocol.SolveTask."""

    question: str
    reference: str | None = None
    searches: int = 1


@dataclass
class Solved:
    task: SearchProblem
    trees: list[Tree]
    choice: Choice | None


def plant(tasks: Sequence[SearchProblem], config: SearchConfig) -> list[list[Tree]]:
    """The trees of each task: `searches` independent trees with distinct seeds."""
    from dataclasses import replace

    return [
        [
            Tree(task.question, replace(config, seed=config.seed + 1_000 * i), task.reference)
            for i in range(task.searches)
        ]
        for task in tasks
    ]


async def solve_many(
    orchestrator: Orchestrator,
    tasks: Sequence[SearchProblem],
    config: SearchConfig,
    *,
    method: Method = DEFAULT_METHOD,
    deadline: float | None = None,
    cancelled: asyncio.Event | None = None,
    progress: Progress | None = None,
) -> tuple[list[Solved], RunStats]:
    """Search all tasks together (their needs share every batch); choose each task's answer."""
    forest = plant(tasks, config)
    stats = await orchestrator.run(
        [t for trees in forest for t in trees],
        deadline=deadline,
        cancelled=cancelled,
        progress=progress,
        seed=config.seed,
    )
    return [Solved(task, trees, choose(trees, method)) for task, trees in zip(tasks, forest, strict=True)], stats
