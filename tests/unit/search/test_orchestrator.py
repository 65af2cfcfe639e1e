"""The orchestrator batches the needs of many trees into one call per service per tick."""

from __future__ import annotations

import asyncio
import time

from services.math import stepfmt
from services.search.engine.backends import Backends, Sampled
from services.search.engine.mcts import SearchConfig
from services.search.engine.orchestrator import Orchestrator, SearchProblem, solve_many
from support.scripted import ScriptedBackends


def _backends(scripted: ScriptedBackends) -> Backends:
    return Backends(generator=scripted, runner=scripted, scorer=scripted, grader=scripted)


QUESTION = "Tom has 3 apples and buys 5 more. How many?"


async def test_batched_ticks_make_one_call_per_service_across_trees() -> None:
    scripted = ScriptedBackends()
    tasks = [SearchProblem(QUESTION, "8", searches=2) for _ in range(5)]
    solved, stats = await solve_many(Orchestrator(_backends(scripted)), tasks, SearchConfig(rollouts=4))
    assert all(s.choice is not None and s.choice.answer == "8" for s in solved)
    # Ten trees in lock-step: each policy call carries one prompt per tree that needed an expansion.
    assert max(scripted.calls["policy"]) == 10
    assert stats.policy.calls == len(scripted.calls["policy"]) <= stats.ticks
    assert stats.policy.items == sum(scripted.calls["policy"])
    assert (stats.policy_version, stats.ppm_version) == ("scripted-v1", "rules-v1")
    assert all(t.stats.rollouts == 4 for s in solved for t in s.trees)
    # What the policy said of each step reaches its node (the "confidence" answer rule reads it).
    assert {(n.tokens, n.logprob) for s in solved for t in s.trees for n in t.nodes[1:]} == {(5, -1.5)}


async def test_unbatched_mode_makes_one_call_per_node_with_the_same_trees() -> None:
    batched, single = ScriptedBackends(), ScriptedBackends()
    tasks = [SearchProblem(QUESTION, "8") for _ in range(3)]
    config = SearchConfig(rollouts=3, seed=5)
    first, _ = await solve_many(Orchestrator(_backends(batched)), tasks, config)
    second, _ = await solve_many(Orchestrator(_backends(single), batched=False), tasks, config)
    assert set(single.calls["policy"]) == {1} and set(single.calls["sandbox"]) == {1}
    assert len(single.calls["policy"]) == sum(batched.calls["policy"])
    # The engine is deterministic: the same trees whichever way the calls were made.
    assert [t.to_json() for s in first for t in s.trees] == [t.to_json() for s in second for t in s.trees]


async def test_deadline_stops_the_search_with_the_best_so_far() -> None:
    class EndlessThinker(ScriptedBackends):
        """Every call writes new steps, so the tree never runs out of work."""

        count = 0

        async def generate(self, prompts, n, temperature, max_new_tokens, seed):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.02)
            rows = []
            for _ in prompts:
                row = []
                for _ in range(n):
                    self.count += 1
                    row.append(Sampled(stepfmt.render_step("more", f"x{self.count} = {self.count}"), True, 3))
                rows.append(row)
            return rows, "endless"

    orchestrator = Orchestrator(_backends(EndlessThinker()))
    solved, stats = await solve_many(
        orchestrator, [SearchProblem(QUESTION, None)], SearchConfig(rollouts=1000), deadline=time.monotonic() + 0.5
    )
    assert stats.stopped_early
    assert 0 < solved[0].trees[0].stats.rollouts < 1000
    assert stats.wall_seconds < 1.5


async def test_cancellation_stops_the_search() -> None:
    cancelled = asyncio.Event()
    cancelled.set()
    _, stats = await solve_many(
        Orchestrator(_backends(ScriptedBackends())), [SearchProblem(QUESTION)], SearchConfig(), cancelled=cancelled
    )
    assert stats.stopped_early and stats.ticks == 0


async def test_search_loop_lets_concurrent_submissions_share_batches() -> None:
    from services.search.engine.loop import SearchLoop
    from services.search.engine.mcts import Tree

    scripted = ScriptedBackends()
    loop = SearchLoop(Orchestrator(_backends(scripted)))
    first = [Tree(QUESTION, SearchConfig(rollouts=3, seed=1), "8")]
    second = [Tree(QUESTION, SearchConfig(rollouts=3, seed=2), "8") for _ in range(2)]
    stats_a, stats_b = await asyncio.gather(loop.submit(first), loop.submit(second))
    assert all(t.done for t in first + second)
    assert max(scripted.calls["policy"]) == 3  # one call carried prompts of both submissions
    assert stats_a.policy.items == sum(t.stats.expansions for t in first)
    assert stats_b.policy.items == sum(t.stats.expansions for t in second)
    assert stats_a.policy_version == "scripted-v1" and not stats_a.stopped_early
    # The loop idles, then serves a later submission.
    later = [Tree(QUESTION, SearchConfig(rollouts=2), "8")]
    await loop.submit(later)
    assert later[0].done


async def test_a_tick_larger_than_a_backend_batch_is_cut_into_chunks() -> None:
    from services.search.engine.orchestrator import Sampling

    scripted = ScriptedBackends()
    tasks = [SearchProblem(QUESTION, "8") for _ in range(7)]
    orchestrator = Orchestrator(_backends(scripted), Sampling(max_batch=3))
    solved, _ = await solve_many(orchestrator, tasks, SearchConfig(rollouts=2))
    assert all(s.choice is not None and s.choice.answer == "8" for s in solved)
    assert max(n for stage in ("policy", "sandbox", "ppm") for n in scripted.calls[stage]) <= 3
    assert scripted.calls["policy"][:3] == [3, 3, 1]  # the first tick: seven root expansions


async def test_a_submission_may_sample_the_policy_its_own_way() -> None:
    from services.search.engine.loop import SearchLoop
    from services.search.engine.mcts import Tree
    from services.search.engine.orchestrator import Sampling

    class Recording(ScriptedBackends):
        def __init__(self) -> None:
            super().__init__()
            self.sampled: list[tuple[int, float, int]] = []

        async def generate(self, prompts, n, temperature, max_new_tokens, seed):  # type: ignore[no-untyped-def]
            self.sampled.append((len(prompts), temperature, max_new_tokens))
            return await super().generate(prompts, n, temperature, max_new_tokens, seed)

    scripted = Recording()
    orchestrator = Orchestrator(_backends(scripted), Sampling(temperature=0.8, max_new_tokens=256))
    loop = SearchLoop(orchestrator)
    plain = [Tree(QUESTION, SearchConfig(rollouts=2, seed=1), "8")]
    own = [Tree(QUESTION, SearchConfig(rollouts=2, seed=2), "8")]
    await asyncio.gather(loop.submit(plain), loop.submit(own, sampling=Sampling(temperature=0.7, max_new_tokens=2048)))
    assert {(t, m) for _, t, m in scripted.sampled} == {(0.8, 256), (0.7, 2048)}  # one call per way of sampling
    assert not orchestrator._sampling_of  # forgotten once the submission is done


async def test_a_submission_may_generate_with_another_policy() -> None:
    from services.search.engine.loop import SearchLoop
    from services.search.engine.mcts import Tree

    own, teacher = ScriptedBackends(), ScriptedBackends()
    orchestrator = Orchestrator(_backends(own))
    loop = SearchLoop(orchestrator)
    mine = [Tree(QUESTION, SearchConfig(rollouts=2, seed=1), "8")]
    taught = [Tree(QUESTION, SearchConfig(rollouts=2, seed=2), "8")]
    await asyncio.gather(loop.submit(mine), loop.submit(taught, generator=teacher))
    assert mine[0].done and taught[0].done
    assert sum(own.calls["policy"]) == mine[0].stats.expansions  # each tree asked its own policy only
    assert sum(teacher.calls["policy"]) == taught[0].stats.expansions
    assert not orchestrator._generator_of
