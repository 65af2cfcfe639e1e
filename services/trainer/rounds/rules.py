"""A round's rules, data in and data out: which problems go into the pool, which count as solved, how the SFT
data is mixed, how many steps the data calls for, which problems are held out, and the publishing gate.

Nothing here loads a model or reads or writes a file: the stages do that. (`Trajectory` and `sft_trajectories`
are used as data only, but their modules import torch, so importing this one does too.)
"""

from __future__ import annotations

import functools
import math
import random
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.common.errors import InvalidInput
from services.math.curriculum import generate
from services.math.curriculum.rephrase import teacher_problems
from services.math.datasets import Problem, read_problem_file
from services.search.engine.mcts import Tree
from services.search.protocol import SolveTask
from services.search.results import result_key
from services.trainer.config import RoundConfig
from services.trainer.data import Trajectory
from services.trainer.extract import NumberRule, clean_right_terminals, sft_trajectories

REPLAY_LEVELS = (1, 2)  # the bootstrap policy's teacher levels
PPM_REPLAY_LEVELS = (1, 2, 3)  # the bootstrap PPM's levels
CURRICULUM_LEVELS = (1, 5)  # the lowest and highest level the curriculum generates
DEFAULT_FRONTIER = 3  # before any round has measured one
T = TypeVar("T")


def pool_levels(configured: tuple[int, ...], frontier: int) -> tuple[int, ...]:
    """The configured levels, or the frontier with its neighbours (the frontier twice), clipped to the curriculum."""
    if configured:
        return configured
    lowest, highest = CURRICULUM_LEVELS
    around = (frontier - 1, frontier, frontier, frontier + 1)
    return tuple(sorted(max(lowest, min(highest, level)) for level in around))


def pool(config: RoundConfig, number: int, levels: tuple[int, ...]) -> list[SolveTask]:
    """Round `number`'s search tasks: `pool_size` problems of the pool file, or of the curriculum over `levels`
    (a repeated level weighting it)."""
    c = config
    if c.pool_file:
        problems: list[Any] = drawn(read_pool(c.pool_file), c.pool_size, c.seed + 7_001 * number)
    else:
        shares = {level: levels.count(level) for level in levels}
        problems = [
            p
            for level, share in shares.items()
            for p in generate(level, -(-c.pool_size * share // len(levels)), seed=c.seed + 7_001 * number)
        ]
    # A teacher's round is terminal-guided: no PPM has been trained for the user's model yet.
    q_mode = "ppm" if number >= c.ppm_q_from_round and not (number == 1 and c.teacher_target) else "terminal"
    errors = c.first_round_code_errors if number == 1 else c.search.max_code_errors
    return [
        SolveTask(
            question=p.question,
            reference=p.answer,
            problem_id=result_key(p.id),
            rollouts=c.search.rollouts,
            candidates=c.search.candidates,
            max_depth=c.search.max_depth,
            q_mode=q_mode,
            max_code_errors=errors,
            searches=1,
            seed=c.seed + number,
            temperature=c.sampling.temperature if c.sampling else None,
            max_new_tokens=c.sampling.max_new_tokens if c.sampling else 0,
            policy_target=c.teacher_target if number == 1 else "",
        )
        for p in problems[: c.pool_size]
    ]


def read_pool(path: str) -> list[Problem]:
    """The pool file's problems (read once per file and modification time)."""
    file = Path(path)
    try:
        stamp = file.stat().st_mtime_ns
    except OSError as exc:
        raise InvalidInput(f"pool file {path}: {exc.strerror or exc}") from exc
    return list(_read_pool(str(file.resolve()), stamp))


@functools.lru_cache(maxsize=4)
def _read_pool(path: str, stamp: int) -> tuple[Problem, ...]:
    return tuple(read_problem_file(Path(path)))


def drawn(problems: Sequence[T], size: int, seed: int) -> list[T]:
    """`size` of the problems drawn with `seed`, in their file order; all of them when there are no more."""
    if size >= len(problems):
        return list(problems)
    return [problems[i] for i in sorted(random.Random(seed).sample(range(len(problems)), size))]


def search_job(number: int, attempt: int) -> str:
    """Where a search of the round keeps its trees: attempt 0 is the pool's, then one per retry."""
    return f"rounds/{number:04d}/" + (f"retry-{attempt}" if attempt else "trees")


def frontier_job(number: int, attempt: int) -> str:
    """Where the round's frontier pass `attempt` (1, 2, …) keeps its trees."""
    return f"rounds/{number:04d}/frontier-{attempt}"


def search_jobs(config: RoundConfig, number: int) -> list[str]:
    """Every search pass of round `number`: the pool's, each retry of the unsolved, each frontier pass."""
    retries = [search_job(number, attempt) for attempt in range(len(config.unsolved_retries) + 1)]
    return retries + [frontier_job(number, attempt) for attempt in range(1, len(config.frontier_retries) + 1)]


def sometimes_solved(results: dict[str, dict[str, Any]], numbers: NumberRule | None = None) -> set[str]:
    """The problems (ids) whose trees reached the answer cleanly on some paths and missed it on others."""
    chosen = set()
    for problem_id, result in results.items():
        trees = [Tree.from_json(tree) for tree in result.get("trees", [])]
        clean = sum(len(clean_right_terminals(tree, numbers)) for tree in trees)
        terminals = sum(len(tree.terminals()) for tree in trees)
        if 0 < clean < terminals:
            chosen.add(problem_id)
    return chosen


def solved(results: dict[str, dict[str, Any]], numbers: NumberRule | None = None) -> set[str]:
    """The problems (ids) solved as `pool_solved` counts them: some tree holds a trajectory the SFT can use."""
    return {
        problem_id
        for problem_id, result in results.items()
        if any(sft_trajectories(Tree.from_json(tree), numbers) for tree in result.get("trees", []))
    }


def sft_mix(config: RoundConfig, number: int, searched: list[Trajectory]) -> tuple[list[Trajectory], int, int]:
    """Round `number`'s SFT data: the searched trajectories `sft_weight` times and a replay of the bootstrap's
    teacher solutions; returns the data, how many of it are replayed, and the step count the data calls for."""
    c = config
    replayed = c.sft_replay if c.replays_curriculum else 0
    replay = [
        Trajectory(p.question, tuple(p.solution))
        for level in REPLAY_LEVELS
        for p in teacher_problems(
            level, replayed // len(REPLAY_LEVELS), c.seed + 31 * number + level, c.replay_rephrased
        )
    ]
    trajectories = searched * c.sft_weight + replay
    steps = scaled_steps(len(trajectories), c.sft_epochs, c.sft.batch_size, c.sft_min_steps, c.sft.max_steps)
    return trajectories, len(replay), steps


def held_out(question: str, fraction: float) -> bool:
    """A stable split by problem."""
    return zlib.crc32(question.encode()) % 1000 < fraction * 1000


def regressions(before: dict[str, Any], after: dict[str, Any], gate: float) -> list[str]:
    """What dropped more than `gate` below the published models: MCTS and greedy accuracy are both watched (an
    MCTS-only gate let an over-fitted policy through while its greedy accuracy halved). A missing or non-finite
    accuracy counts as 0: a NaN compares false with everything and would pass any gate."""
    if not 0.0 <= gate < 1.0:
        raise ValueError(f"a regression gate of {gate} refuses nothing: it must be in [0, 1)")
    return [
        f"{name} accuracy {_accuracy(after, key):.3f} < {_accuracy(before, key):.3f}"
        for name, key in (("MCTS", "mcts_accuracy"), ("greedy", "greedy_accuracy"))
        if _accuracy(after, key) < _accuracy(before, key) - gate
    ]


def _accuracy(metrics: dict[str, Any], key: str) -> float:
    value = metrics.get(key, 0.0)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def scaled_steps(examples: int, epochs: float, batch_size: int, least: int, most: int) -> int:
    return max(least, min(most, math.ceil(epochs * examples / batch_size)))
