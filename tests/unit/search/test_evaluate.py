"""Evaluation methods that share their searches: majority vote and PPM best-of-N read the same N samples."""

from __future__ import annotations

import pytest

from services.search.backends import Backends
from services.search.evaluate import EvalProblem, EvalSettings, evaluate, evaluate_rules
from support.scripted import ScriptedBackends

PROBLEMS = [
    EvalProblem("p1", "Tom has 3 apples and buys 5 more. How many?", "8"),
    EvalProblem("p2", "Tom has 3 apples and buys 5 more. How many now?", "9"),
]


def _backends(scripted: ScriptedBackends) -> Backends:
    return Backends(generator=scripted, runner=scripted, scorer=scripted, grader=scripted)


async def test_shared_samples_give_each_rule_what_it_gives_alone_for_half_the_sampling() -> None:
    settings = EvalSettings(method="maj", rollouts=4, seed=3)
    shared_backends = ScriptedBackends()
    shared = await evaluate_rules(PROBLEMS, _backends(shared_backends), settings, ("maj", "bon"))
    alone_backends = ScriptedBackends()
    for method in ("maj", "bon"):
        results, summary = await evaluate(PROBLEMS, _backends(alone_backends), EvalSettings(method, 4, seed=3))
        assert [(r.answer, r.correct, r.found) for r in shared[method][0]] == [
            (r.answer, r.correct, r.found) for r in results
        ]
        assert shared[method][1]["accuracy"] == summary["accuracy"] and shared[method][1]["method"] == method
    assert [r.correct for r in shared["maj"][0]] == [True, False]
    assert 2 * sum(shared_backends.calls["policy"]) == sum(alone_backends.calls["policy"])


async def test_only_sampled_methods_share() -> None:
    with pytest.raises(ValueError, match="share"):
        await evaluate_rules(PROBLEMS, _backends(ScriptedBackends()), EvalSettings("greedy"), ("greedy", "mcts"))
