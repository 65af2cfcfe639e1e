"""The evaluation harness behind `thinkmesh eval`: accuracy of a decoding method on a problem set.

Methods, all through the same search code:
- greedy: one trajectory, temperature 0 (one candidate per step, one rollout);
- maj:    N sampled trajectories, majority vote over their answers (self-consistency);
- bon:    N sampled trajectories, the answer of the one the PPM scores highest (best-of-N);
- mcts:   one MCTS per problem with R rollouts and the PPM (the answer by the configured rule).
No reference answer is given to the search (inference mode); answers are graded afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from services.common.jsonfiles import write_jsonl
from services.search.engine.answers import DEFAULT_METHOD, Method, choose
from services.search.engine.backends import Backends
from services.search.engine.mcts import INFERENCE, SearchConfig, Tree
from services.search.engine.orchestrator import Orchestrator, Sampling

EvalMethod = Literal["greedy", "maj", "bon", "mcts"]


@dataclass(frozen=True)
class EvalProblem:
    id: str
    question: str
    answer: str
    kind: str = ""  # a group to break accuracy down by (curriculum: "4 moves, 3-digit numbers"); "" for none


@dataclass(frozen=True)
class EvalSettings:
    method: EvalMethod = "greedy"
    # The engine's configuration, as a Solve's: `rollouts` is N for maj/bon (one single-path tree per sample)
    # and R for mcts; greedy searches one path.
    search: SearchConfig = INFERENCE
    sampling: Sampling = field(default_factory=Sampling)  # greedy decodes at temperature 0 whatever it says
    answer_method: Method = DEFAULT_METHOD
    searches: int = 1  # mcts: independent searches of a problem, their terminals pooled (the paper's 64 trajectories)
    batch: int = 64  # problems searched together

    def searching(self, **knobs: Any) -> EvalSettings:
        """These settings with some of the search's knobs changed (rollouts, candidates, seed, ...)."""
        return replace(self, search=replace(self.search, **knobs))


@dataclass
class ProblemResult:
    id: str
    kind: str
    question: str
    reference: str
    answer: str
    correct: bool
    tokens: int
    rollouts: int
    seconds: float
    found: bool = False  # some terminal answer was right (pass@k)


# The authors' inference configuration (../shared/docs/rstar-math.md, docs/models.md gives each source): 32
# candidates per step, temperature 1.0, up to 2,048 new tokens per step, PPM-augmented Q, c = 2, depth 16, and the
# headline's 64 trajectories (independent searches) with the answer chosen by the PPM's score (the paper's rule;
# their code takes a majority vote of the top-4 answers by score). The inference rollout count is not stated:
# 16, the paper's training search.
EVAL_PRESETS: dict[str, EvalSettings] = {
    "rstar-eval": EvalSettings(
        method="mcts",
        search=SearchConfig(rollouts=16, candidates=32, max_depth=16, c=2.0, q_mode="ppm"),
        sampling=Sampling(temperature=1.0, max_new_tokens=2048),
        answer_method="ppm",
        searches=64,
    ),
}


def trees_for(problem: EvalProblem, s: EvalSettings) -> list[Tree]:
    single = replace(s.search, rollouts=1, candidates=1)
    if s.method == "greedy":
        return [Tree(problem.question, single)]
    if s.method in ("maj", "bon"):
        return [Tree(problem.question, replace(single, seed=s.search.seed + i)) for i in range(s.search.rollouts)]
    return [Tree(problem.question, replace(s.search, seed=s.search.seed + 1_000 * i)) for i in range(s.searches)]


def _answer_rule(s: EvalSettings) -> Method:
    return {"greedy": "ppm", "maj": "majority", "bon": "ppm"}.get(s.method, s.answer_method)  # type: ignore[return-value]


SAMPLED: tuple[EvalMethod, ...] = ("maj", "bon")  # the same N samples; only the answer rule differs


async def evaluate(
    problems: Sequence[EvalProblem],
    backends: Backends,
    settings: EvalSettings,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[ProblemResult], dict[str, Any]]:
    """Runs `settings.method` on the problems; returns per-problem results and a summary."""
    return (await evaluate_rules(problems, backends, settings, (settings.method,), progress=progress))[settings.method]


async def evaluate_rules(
    problems: Sequence[EvalProblem],
    backends: Backends,
    settings: EvalSettings,
    methods: Sequence[EvalMethod],
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[EvalMethod, tuple[list[ProblemResult], dict[str, Any]]]:
    """Several methods over one set of searches, when they differ only in how the answer is chosen: majority
    vote and best-of-N by the PPM read the same N samples (half the sampling of running them apart)."""
    if len(methods) > 1 and not set(methods) <= set(SAMPLED):
        raise ValueError(f"only {SAMPLED} share their searches, not {tuple(methods)}")
    sampling = replace(settings.sampling, temperature=0.0) if settings.method == "greedy" else settings.sampling
    orchestrator = Orchestrator(backends, sampling)
    results: dict[EvalMethod, list[ProblemResult]] = {method: [] for method in methods}
    tokens_total = 0
    started = time.monotonic()
    for start in range(0, len(problems), settings.batch):
        chunk = problems[start : start + settings.batch]
        forest = [trees_for(p, settings) for p in chunk]
        chunk_started = time.monotonic()
        stats = await orchestrator.run([t for trees in forest for t in trees], seed=settings.search.seed)
        seconds = (time.monotonic() - chunk_started) / len(chunk)
        tokens_total += stats.tokens
        # pass@k: is any terminal answer of the problem's trees right (the search found it, chosen or not)?
        found = [sorted({n.answer or "" for t in trees for n in t.terminals()}) for trees in forest]
        hits = iter(
            await backends.grader.grade(
                [(p.answer, a) for p, answers in zip(chunk, found, strict=True) for a in answers]
            )
        )
        any_right = [any([next(hits) for _ in answers]) for answers in found]
        for method in methods:
            chosen = [choose(trees, _answer_rule(replace(settings, method=method))) for trees in forest]
            verdicts = await backends.grader.grade(
                [(p.answer, c.answer if c else "") for p, c in zip(chunk, chosen, strict=True)]
            )
            for problem, trees, choice, ok, anywhere in zip(chunk, forest, chosen, verdicts, any_right, strict=True):
                results[method].append(
                    ProblemResult(
                        problem.id,
                        problem.kind,
                        problem.question,
                        problem.answer,
                        choice.answer if choice else "",
                        bool(ok),
                        tokens=stats.tokens // len(chunk),
                        rollouts=sum(t.stats.rollouts for t in trees),
                        seconds=seconds,
                        found=anywhere,
                    )
                )
        if progress is not None:
            progress(len(chunk))
    wall = time.monotonic() - started
    return {method: (rows, _summary(method, rows, settings, tokens_total, wall)) for method, rows in results.items()}


def _summary(
    method: EvalMethod, results: list[ProblemResult], settings: EvalSettings, tokens: int, wall: float
) -> dict[str, Any]:
    n = len(results)
    summary: dict[str, Any] = {
        "method": method,
        "n": n,
        "accuracy": sum(r.correct for r in results) / n if n else 0.0,
        "pass_at_k": sum(r.found for r in results) / n if n else 0.0,
        "rollouts": settings.search.rollouts if method != "greedy" else 1,
        "tokens_per_problem": tokens / n if n else 0.0,
        "seconds_per_problem": wall / n if n else 0.0,
        "wall_seconds": round(wall, 2),
    }
    if any(r.kind for r in results):
        summary["by_kind"] = by_kind(results)
    return summary


def by_kind(results: Sequence[ProblemResult]) -> dict[str, dict[str, float]]:
    """Accuracy and pass@k per kind of problem: which kinds a policy reaches, and which it never solves."""
    groups: dict[str, list[ProblemResult]] = {}
    for r in results:
        groups.setdefault(r.kind, []).append(r)
    return {
        kind: {
            "n": len(rows),
            "accuracy": sum(r.correct for r in rows) / len(rows),
            "pass_at_k": sum(r.found for r in rows) / len(rows),
        }
        for kind, rows in sorted(groups.items())
    }


def write_results(path: Path, results: Sequence[ProblemResult]) -> None:
    """One JSON object per problem (a `ProblemResult`), so that two evaluations of the same problems can be
    compared problem by problem (`thinkmesh compare`)."""
    write_jsonl(path, (asdict(r) for r in results))
