"""A worker's SearchLoop stops a search at its deadline (or when it is cancelled) even in the middle of a tick,
and answers with what its trees hold; a tick nobody waits for any more is cancelled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from services.math import stepfmt
from services.search.engine.backends import Backends, Prompt, Sampled
from services.search.engine.loop import SearchLoop
from services.search.engine.mcts import SearchConfig, Tree
from services.search.engine.orchestrator import Orchestrator
from support.scripted import ScriptedBackends

pytestmark = pytest.mark.timeout(30)
QUESTION = "Tom has 3 apples and buys 5 more. How many?"
SLOW_S = 5.0  # a policy call that takes far longer than any deadline here


class SlowingPolicy(ScriptedBackends):
    """A policy whose every candidate is new (a move, or every third one a print; after an output, its answer), so
    its tree never runs out of work: it answers at once for `fast_s` after its first call, after `slow_s` later."""

    def __init__(self, fast_s: float, slow_s: float = SLOW_S) -> None:
        super().__init__()
        self.fast_s = fast_s
        self.slow_s = slow_s
        self.first: float | None = None
        self.written = 0
        self.interrupted = 0  # slow calls cancelled before they answered

    def _step(self, steps: tuple[str, ...]) -> str:
        if steps and steps[-1].startswith(stepfmt.OUTPUT_START):
            return stepfmt.render_answer((stepfmt.parse_step(steps[-1]).output or "?").strip())
        self.written += 1
        if self.written % 3 == 0:
            return stepfmt.render_step("print it", f"print({self.written} % 7)", last=True)
        return stepfmt.render_step("a move", f"x{self.written} = {self.written}")

    async def generate(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Sampled]], str]:
        self.calls["policy"].append(len(prompts))
        self.first = self.first or time.monotonic()
        if time.monotonic() - self.first >= self.fast_s:
            try:
                await asyncio.sleep(self.slow_s)
            except asyncio.CancelledError:
                self.interrupted += 1
                raise
        return [[Sampled(self._step(p.steps), True, 5, -1.5) for _ in range(n)] for p in prompts], "slowing"


def _loop(policy: ScriptedBackends) -> SearchLoop:
    return SearchLoop(Orchestrator(Backends(generator=policy, runner=policy, scorer=policy, grader=policy)))


def _trees(rollouts: int = 1_000) -> list[Tree]:
    return [Tree(QUESTION, SearchConfig(rollouts=rollouts, candidates=4))]


async def test_a_search_stops_at_its_deadline_in_the_middle_of_a_slow_tick_with_its_best_so_far() -> None:
    policy = SlowingPolicy(fast_s=0.2)
    trees = _trees()
    started = time.monotonic()
    stats = await _loop(policy).submit(trees, deadline=started + 0.5)
    assert time.monotonic() - started < 0.5 + 0.2
    assert stats.stopped_early
    assert 0 < trees[0].stats.rollouts < 1_000  # what the fast calls found is kept
    await asyncio.sleep(0)
    assert policy.interrupted == 1  # nobody waited for the slow call any more: it was cancelled


async def test_a_cancelled_search_stops_in_the_middle_of_a_slow_tick() -> None:
    policy = SlowingPolicy(fast_s=0)
    cancelled = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, cancelled.set)
    started = time.monotonic()
    stats = await _loop(policy).submit(_trees(), cancelled=cancelled)
    assert time.monotonic() - started < 0.3 + 0.2
    assert stats.stopped_early


async def test_a_tick_another_search_still_needs_goes_on_after_one_search_stopped() -> None:
    policy = SlowingPolicy(fast_s=0, slow_s=0.2)
    loop = _loop(policy)
    short, long = _trees(), _trees(rollouts=1)
    started = time.monotonic()
    short_stats, long_stats = await asyncio.gather(
        loop.submit(short, deadline=started + 0.1), loop.submit(long, deadline=started + 20)
    )
    assert short_stats.stopped_early and short_stats.wall_seconds < 0.1 + 0.1
    assert not long_stats.stopped_early and long[0].stats.rollouts == 1
    assert policy.interrupted == 0


async def test_a_search_whose_deadline_has_passed_returns_at_once_without_a_call() -> None:
    policy = SlowingPolicy(fast_s=0)
    stats = await _loop(policy).submit(_trees(), deadline=time.monotonic() - 1)
    assert stats.stopped_early and stats.ticks == 0
    assert policy.calls["policy"] == []
