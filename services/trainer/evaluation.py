"""Held-out evaluation of a round's candidate models: every method at equal rollouts, the PPM's pairwise
accuracy on held-out pairs, and the frontier (how often the policy solves the first level it has not learnt).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.store import ModelStore
from services.math.curriculum import generate
from services.search.engine.backends import Runner
from services.search.eval.evaluate import (
    SAMPLED,
    EvalMethod,
    EvalProblem,
    EvalSettings,
    ProblemResult,
    evaluate,
    evaluate_rules,
    write_results,
)
from services.search.eval.local import local_backends
from services.trainer.data import StepPair

EVAL_SEED = 424_242  # held-out problems: no training round draws this seed

# Opens the sandbox an evaluation runs programs on (a channel to a SandboxService), closing it on exit.
OpenSandbox = Callable[[], AbstractAsyncContextManager[Runner]]


@dataclass(frozen=True)
class EvalPlan:
    levels: tuple[int, ...]
    per_level: int
    rollouts: int
    candidates: int
    frontier_problems: int
    frontier_samples: int
    # A dataset of ../shared/data or a problem file to evaluate on instead of the curriculum's levels: its first
    # `size` problems (the frontier, a curriculum measure, is then not measured).
    dataset: str = ""
    size: int = 100
    # On the curriculum (not a dataset): majority voting and best-of-N draw `rollouts` samples a problem, several
    # greedy decodes' worth, so they run on the first `sampled_per_level` problems of each level only (None: all);
    # MCTS, a tree search per problem and most of an evaluation, on the `mcts_levels` only (None: every level).
    sampled_per_level: int | None = None
    mcts_levels: tuple[int, ...] | None = None


def heldout_problems(levels: Sequence[int], per_level: int) -> list[EvalProblem]:
    return [
        EvalProblem(p.id, p.question, p.answer) for level in levels for p in generate(level, per_level, seed=EVAL_SEED)
    ]


def plan_problems(plan: EvalPlan) -> tuple[list[EvalProblem], dict[str, list[str]]]:
    """The plan's problems, and the ids of each level's ("L3": [...]) for the per-level accuracies."""
    if not plan.dataset:
        problems = heldout_problems(plan.levels, plan.per_level)
        levels = {
            f"L{level}": [p.id for p in problems if p.id.startswith(f"curriculum-L{level}-")] for level in plan.levels
        }
        return problems, levels
    from services.math.datasets import load_problems

    chosen = load_problems(plan.dataset)[: plan.size]
    by_level: dict[str, list[str]] = {}
    for p in chosen:
        if p.level is not None:
            by_level.setdefault(f"L{p.level}", []).append(p.id)
    return [EvalProblem(p.id, p.question, p.answer) for p in chosen], dict(sorted(by_level.items()))


async def _evaluate(
    store: ModelStore,
    policy: str,
    ppm: str,
    plan: EvalPlan,
    pairs: Sequence[StepPair],
    results_dir: Path | None,
    sandbox: OpenSandbox | None,
) -> dict[str, Any]:
    problems, levels = plan_problems(plan)
    metrics: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        runner = await stack.enter_async_context(sandbox()) if sandbox is not None else None
        backends = await stack.enter_async_context(
            local_backends(store, policy_version=policy, ppm_version=ppm, runner=runner)
        )
        per_level: dict[str, float] = {}
        seconds: dict[str, float] = {}  # each search's wall time (majority voting's samples serve best-of-N too)
        by_method: dict[str, list[ProblemResult]] = {}
        groups: tuple[tuple[EvalMethod, ...], ...] = (("greedy",), SAMPLED, ("mcts",))
        for methods in groups:
            settings = EvalSettings(methods[0]).searching(rollouts=plan.rollouts, candidates=plan.candidates)
            asked = problems
            if methods == SAMPLED and not plan.dataset:  # a dataset of the user's is evaluated whole
                asked = _sampled_subset(problems, levels, plan.sampled_per_level)
            elif methods == ("mcts",) and plan.mcts_levels is not None and not plan.dataset:
                searched = {i for level in plan.mcts_levels for i in levels.get(f"L{level}", [])}
                asked = [p for p in problems if p.id in searched]
            for method, (results, summary) in (await evaluate_rules(asked, backends, settings, methods)).items():
                by_method[method] = results
                metrics[f"{method}_accuracy"] = summary["accuracy"]
                seconds[methods[0] if methods == SAMPLED else method] = summary["wall_seconds"]
                for level, ids in levels.items():
                    wanted = set(ids)
                    scoped = [r for r in results if r.id in wanted]
                    if scoped:  # a level the method was not run on has no accuracy, not 0
                        per_level[f"{method}_{level}"] = sum(r.correct for r in scoped) / len(scoped)
        metrics["per_level"] = per_level
        metrics["eval_seconds"] = seconds
        if results_dir is not None:  # every problem's result: `thinkmesh compare` tells a round's gain from chance
            for name, rows in by_method.items():
                write_results(results_dir / f"{name}.jsonl", rows)
        if not plan.dataset:  # the frontier is the curriculum's first level the policy has not learnt
            frontier = next(
                (lvl for lvl in range(1, 6) if per_level.get(f"greedy_L{lvl}", 0.0) < 0.5 and lvl in plan.levels),
                max(plan.levels),
            )
            metrics["frontier_level"] = frontier
            metrics.update(await _frontier(backends, frontier, plan, by_method["mcts"]))
        scorer = backends.scorer
        metrics["ppm_pair_accuracy"] = await _pair_accuracy(scorer, pairs) if pairs else None
    return metrics


def _sampled_subset(
    problems: list[EvalProblem], levels: dict[str, list[str]], per_level: int | None
) -> list[EvalProblem]:
    """The first `per_level` problems of each level (all of them when None or when no level is known)."""
    if per_level is None or not levels:
        return problems
    wanted = {i for ids in levels.values() for i in ids[:per_level]}
    return [p for p in problems if p.id in wanted]


async def _frontier(backends: Any, level: int, plan: EvalPlan, mcts: list[ProblemResult]) -> dict[str, float]:
    """pass@k of sampled trajectories and MCTS accuracy on the frontier level.

    When the frontier is a held-out level, its problems are the held-out ones and their MCTS results are reused
    (same rollouts): only the k samples per problem are new."""
    heldout = [r for r in mcts if r.id.startswith(f"curriculum-L{level}-")][: plan.frontier_problems]
    reuse = len(heldout) == plan.frontier_problems
    if reuse:
        problems = [EvalProblem(r.id, r.question, r.reference) for r in heldout]
    else:
        problems = [
            EvalProblem(p.id, p.question, p.answer) for p in generate(level, plan.frontier_problems, seed=EVAL_SEED + 1)
        ]
    _, sampled = await evaluate(problems, backends, EvalSettings("maj").searching(rollouts=plan.frontier_samples))
    if reuse:
        mcts_accuracy = sum(r.correct for r in heldout) / len(heldout)
    else:
        _, searched = await evaluate(
            problems, backends, EvalSettings("mcts").searching(rollouts=plan.rollouts, candidates=plan.candidates)
        )
        mcts_accuracy = searched["accuracy"]
    return {
        "frontier_pass_at_k": sampled["pass_at_k"],
        "frontier_samples": plan.frontier_samples,
        "frontier_mcts_accuracy": mcts_accuracy,
    }


async def _pair_accuracy(scorer: Any, pairs: Sequence[StepPair]) -> float:
    from services.search.engine.backends import Prompt

    items = []
    for pair in pairs:
        items.append(Prompt(pair.question, (*pair.prefix, pair.chosen)))
        items.append(Prompt(pair.question, (*pair.prefix, pair.rejected)))
    scores, _ = await scorer.score(items)
    wins = sum(bool(scores[2 * i][-1] > scores[2 * i + 1][-1]) for i in range(len(pairs)))
    return wins / len(pairs)


def evaluate_models(
    store: ModelStore,
    policy: str,
    ppm: str,
    plan: EvalPlan,
    pairs: Sequence[StepPair],
    *,
    results_dir: Path | None = None,
    sandbox: OpenSandbox | None = None,
) -> dict[str, Any]:
    """The round's metrics; with `results_dir`, also one `METHOD.jsonl` of per-problem results there. The
    candidates' programs run on the sandbox `sandbox` opens (a SandboxService), or in process without one."""
    return asyncio.run(_evaluate(store, policy, ppm, plan, pairs, results_dir, sandbox))
