"""Evaluation methods that share their searches: majority vote and PPM best-of-N read the same N samples."""

from __future__ import annotations

import pytest

from services.search.engine.backends import Backends
from services.search.eval.evaluate import EvalProblem, EvalSettings, evaluate, evaluate_rules
from support.scripted import ScriptedBackends

PROBLEMS = [
    EvalProblem("p1", "Tom has 3 apples and buys 5 more. How many?", "8"),
    EvalProblem("p2", "Tom has 3 apples and buys 5 more. How many now?", "9"),
]


def _backends(scripted: ScriptedBackends) -> Backends:
    return Backends(generator=scripted, runner=scripted, scorer=scripted, grader=scripted)


async def test_shared_samples_give_each_rule_what_it_gives_alone_for_half_the_sampling() -> None:
    settings = EvalSettings("maj").searching(rollouts=4, seed=3)
    shared_backends = ScriptedBackends()
    shared = await evaluate_rules(PROBLEMS, _backends(shared_backends), settings, ("maj", "bon"))
    alone_backends = ScriptedBackends()
    for method in ("maj", "bon"):
        results, summary = await evaluate(
            PROBLEMS, _backends(alone_backends), EvalSettings(method).searching(rollouts=4, seed=3)
        )
        assert [(r.answer, r.correct, r.found) for r in shared[method][0]] == [
            (r.answer, r.correct, r.found) for r in results
        ]
        assert shared[method][1]["accuracy"] == summary["accuracy"] and shared[method][1]["method"] == method
    assert [r.correct for r in shared["maj"][0]] == [True, False]
    assert 2 * sum(shared_backends.calls["policy"]) == sum(alone_backends.calls["policy"])


async def test_only_sampled_methods_share() -> None:
    with pytest.raises(ValueError, match="share"):
        await evaluate_rules(PROBLEMS, _backends(ScriptedBackends()), EvalSettings("greedy"), ("greedy", "mcts"))


async def test_accuracy_is_broken_down_by_kind_when_problems_have_one() -> None:
    kinds = [EvalProblem(p.id, p.question, p.answer, kind) for p, kind in zip(PROBLEMS, ("easy", "hard"), strict=True)]
    results, summary = await evaluate(
        kinds, _backends(ScriptedBackends()), EvalSettings("maj").searching(rollouts=4, seed=3)
    )
    assert [(r.kind, r.correct) for r in results] == [("easy", True), ("hard", False)]
    assert summary["by_kind"] == {
        "easy": {"n": 1, "accuracy": 1.0, "pass_at_k": 1.0},
        "hard": {"n": 1, "accuracy": 0.0, "pass_at_k": 0.0},
    }
    _, plain = await evaluate(
        PROBLEMS, _backends(ScriptedBackends()), EvalSettings("maj").searching(rollouts=4, seed=3)
    )
    assert "by_kind" not in plain


def test_a_curriculum_problem_names_its_shape() -> None:
    from services.math.curriculum import CurriculumProblem

    problem = CurriculumProblem("p", "Ann has 105 pens. She buys 7 more.", "112", 3, "arithmetic", "toys", (), 4, 0)
    assert problem.shape == "4 moves, 3-digit numbers"
