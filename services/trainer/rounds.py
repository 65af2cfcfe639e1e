"""One self-evolution round, as resumable stages:

    search    one Celery `solve` task per pool problem (training mode: reference answers given)
    extract   SFT trajectories and PPM pairs from the finished trees (services/trainer/extract.py)
    sft       the policy, fine-tuned from the round-0 model on every round's SFT data so far
    ppm       the PPM, initialised from the new policy, trained on every round's pairs so far
    evaluate  held-out accuracy (greedy, maj, bon, MCTS) and the frontier, for the candidates
    publish   promote the candidates unless they regress past the gate

Each stage writes its output into `rounds/<n>/` and then records itself as finished in `state.json`
(atomically), so a trainer killed at any point resumes at the first unfinished stage; finished searches are
never sent again. Candidates are published as non-current versions and only promoted by `publish`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from services.common.jsonfiles import read_jsonl, write_json, write_jsonl
from services.common.store import Lineage, ModelStore
from services.math.curriculum import generate
from services.search.mcts import Tree
from services.search.protocol import SolveTask
from services.trainer.bootstrap import corrupted_pairs
from services.trainer.config import RoundConfig
from services.trainer.dispatch import CeleryDispatcher, SearchJob
from services.trainer.extract import extract, sft_trajectories
from services.trainer.ppm_train import StepPair, step_pairs
from services.trainer.sft import Trajectory

log = logging.getLogger(__name__)

STAGES = ("search", "extract", "sft", "ppm", "evaluate", "publish")
REPLAY_LEVELS = (1, 2)  # the bootstrap policy's teacher levels
PPM_REPLAY_LEVELS = (1, 2, 3)  # the bootstrap PPM's levels


def _solved(results: dict[str, dict[str, Any]]) -> set[str]:
    """The problems (ids) solved as `pool_solved` counts them: some tree holds a trajectory the SFT can use."""
    return {
        problem_id
        for problem_id, result in results.items()
        if any(sft_trajectories(Tree.from_json(tree)) for tree in result.get("trees", []))
    }


def sft_mix(config: RoundConfig, number: int, searched: list[Trajectory]) -> tuple[list[Trajectory], int, int]:
    """Round `number`'s SFT data: the searched trajectories `sft_weight` times and a replay of the bootstrap's
    teacher solutions; returns the data, how many of it are replayed, and the step count the data calls for."""
    c = config
    replay = [
        Trajectory(p.question, tuple(p.solution))
        for level in REPLAY_LEVELS
        for p in generate(level, c.sft_replay // len(REPLAY_LEVELS), seed=c.seed + 31 * number + level)
    ]
    trajectories = searched * c.sft_weight + replay
    steps = scaled_steps(len(trajectories), c.sft_epochs, c.sft.batch_size, c.sft_min_steps, c.sft.max_steps)
    return trajectories, len(replay), steps


def held_out(question: str, fraction: float) -> bool:
    """A stable split by problem."""
    return zlib.crc32(question.encode()) % 1000 < fraction * 1000


def regressions(before: dict[str, Any], after: dict[str, Any], gate: float) -> list[str]:
    """What dropped more than `gate` below the published models: MCTS and greedy accuracy are both watched (an
    MCTS-only gate let an over-fitted policy through while its greedy accuracy halved)."""
    return [
        f"{name} accuracy {after.get(key, 0.0):.3f} < {before.get(key, 0.0):.3f}"
        for name, key in (("MCTS", "mcts_accuracy"), ("greedy", "greedy_accuracy"))
        if after.get(key, 0.0) < before.get(key, 0.0) - gate
    ]


def scaled_steps(examples: int, epochs: float, batch_size: int, least: int, most: int) -> int:
    return max(least, min(most, math.ceil(epochs * examples / batch_size)))


@dataclass
class RoundState:
    round: int
    state: str = "running"  # running | succeeded | failed | rejected
    stage: str = "search"
    finished: list[str] = field(default_factory=list)
    problems_done: int = 0
    problems_total: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    policy_version: str = ""
    ppm_version: str = ""
    message: str = ""
    started_at: float = field(default_factory=time.time)
    seconds: dict[str, float] = field(default_factory=dict)


def _rows(path: Path) -> list[dict[str, Any]]:
    """A round's JSON-lines file; none when the round wrote none (e.g. it solved nothing)."""
    return read_jsonl(path) if path.is_file() else []


class Rounds:
    """The rounds of one store: which exist, their state, and running the next (or resuming one)."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def directory(self, number: int) -> Path:
        return self.store.root / "rounds" / f"{number:04d}"

    def numbers(self) -> list[int]:
        root = self.store.root / "rounds"
        return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []

    def state(self, number: int) -> RoundState | None:
        path = self.directory(number) / "state.json"
        return RoundState(**json.loads(path.read_text())) if path.is_file() else None

    def states(self) -> list[RoundState]:
        """Every round that has finished one way or another (succeeded, rejected or failed), oldest first."""
        return [s for n in self.numbers() if (s := self.state(n)) is not None and s.state != "running"]

    def save(self, state: RoundState) -> None:
        write_json(self.directory(state.round) / "state.json", asdict(state))

    def next_number(self) -> int:
        """The latest round when it is unfinished — killed or failed — (resume it), else a new one."""
        numbers = [n for n in self.numbers() if n > 0]
        if numbers:
            latest = self.state(numbers[-1])
            if latest is not None and latest.state in ("running", "failed"):
                return numbers[-1]
            return numbers[-1] + 1
        return 1


class RoundRunner:
    def __init__(
        self,
        store: ModelStore,
        config: RoundConfig,
        dispatcher: CeleryDispatcher,
        *,
        progress: Callable[[str, int, int], None] | None = None,
        on_publish: Callable[[str, str], None] | None = None,
        before_search: Callable[[], None] | None = None,
        stop_after: str | None = None,
    ) -> None:
        self.store = store
        self.rounds = Rounds(store)
        self.config = config
        self.dispatcher = dispatcher
        self.progress = progress or (lambda stage, done, total: None)
        self.on_publish = on_publish
        self.before_search = before_search  # e.g. wait until the services serve the current versions
        self.stop_after = stop_after  # tests: simulate a crash after this stage

    # --- helpers -------------------------------------------------------------------------------------

    def pool_levels(self, number: int) -> tuple[int, ...]:
        """The configured levels, or the frontier of the latest published round with its neighbours."""
        if self.config.pool_levels:
            return self.config.pool_levels
        latest = self._latest_published(number)
        frontier = int(latest.metrics.get("frontier_level", 3)) if latest else 3
        return tuple(sorted(max(1, min(5, level)) for level in (frontier - 1, frontier, frontier, frontier + 1)))

    def _pool(self, number: int) -> list[SolveTask]:
        c = self.config
        levels = self.pool_levels(number)
        shares = {level: levels.count(level) for level in levels}
        problems = [
            p
            for level, share in shares.items()
            for p in generate(level, -(-c.pool_size * share // len(levels)), seed=c.seed + 7_001 * number)
        ]
        q_mode = "ppm" if number >= c.ppm_q_from_round else "terminal"
        errors = c.first_round_code_errors if number == 1 else c.code_errors
        return [
            SolveTask(
                question=p.question,
                reference=p.answer,
                problem_id=p.id,
                rollouts=c.rollouts,
                candidates=c.candidates,
                max_depth=c.max_depth,
                q_mode=q_mode,
                max_code_errors=errors,
                searches=1,
                seed=c.seed + number,
            )
            for p in problems[: c.pool_size]
        ]

    def _base_policy(self) -> str:
        """The round-0 model every round's SFT starts from (the paper re-trains from the base each round)."""
        round_zero = [v for v in self.store.versions("policy") if v.lineage.round == 0]
        if not round_zero:
            raise RuntimeError("no round-0 policy in the store: run `thinkmesh bootstrap` first")
        return round_zero[0].version

    # --- a round --------------------------------------------------------------------------------------

    def run(self) -> RoundState:
        self._ensure_baseline()
        number = self.rounds.next_number()
        state = self.rounds.state(number) or RoundState(round=number)
        state.state, state.message = "running", ""
        log.info("round %d: resuming at %s", number, next((s for s in STAGES if s not in state.finished), "done"))
        for stage in STAGES:
            if stage in state.finished:
                continue
            state.stage = stage
            self.rounds.save(state)
            started = time.monotonic()
            try:
                getattr(self, f"_stage_{stage}")(state)
            except Exception as exc:
                state.state, state.message = "failed", f"{stage}: {type(exc).__name__}: {exc}"
                self.rounds.save(state)
                raise
            state.seconds[stage] = round(time.monotonic() - started, 1)
            state.finished.append(stage)
            self.rounds.save(state)
            if state.state != "running" or stage == self.stop_after:
                break
        return state

    def _ensure_baseline(self) -> None:
        """Round 0's row: the current (bootstrap) models evaluated on the same held-out set, once."""
        if self.rounds.state(0) is not None:
            return
        policy, ppm = self.store.current_name("policy"), self.store.current_name("ppm")
        if policy is None or ppm is None:
            raise RuntimeError("the store has no current policy and PPM: run `thinkmesh bootstrap` first")
        metrics = self._evaluate(0, policy, ppm, [])
        state = RoundState(
            round=0,
            state="succeeded",
            stage="publish",
            finished=list(STAGES),
            metrics=metrics,
            policy_version=policy,
            ppm_version=ppm,
        )
        self.rounds.save(state)
        self._report(state)

    @staticmethod
    def _search_job(number: int, attempt: int) -> str:
        """Where a search of the round keeps its trees: attempt 0 is the pool's, then one per retry."""
        return f"rounds/{number:04d}/" + (f"retry-{attempt}" if attempt else "trees")

    def _stage_search(self, state: RoundState) -> None:
        if self.before_search is not None:
            self.before_search()
        pool = self._pool(state.round)
        state.problems_total = len(pool)

        def progress(done: int, total: int) -> None:
            state.problems_done = done
            self.progress("search", done, total)

        results = self.dispatcher.run(SearchJob(self._search_job(state.round, 0), pool), progress)
        if not self.config.unsolved_retries:
            return
        solved = _solved(results)
        first_solved = len(solved)
        for attempt, (rollouts, candidates) in enumerate(self.config.unsolved_retries, start=1):
            # Each pass's problems follow from the stored results, so a resumed round sends the same ones.
            unsolved = [
                replace(p, rollouts=rollouts, candidates=candidates, seed=p.seed + 1_000 * attempt)
                for p in pool
                if p.problem_id not in solved
            ]
            if not unsolved:
                break
            job = SearchJob(self._search_job(state.round, attempt), unsolved)
            solved |= _solved(self.dispatcher.run(job, functools.partial(self.progress, f"retry {attempt}")))
        state.metrics["retried"] = len(pool) - first_solved
        state.metrics["solved_by_retries"] = len(solved) - first_solved

    def _trees(self, number: int) -> list[Tree]:
        return [
            Tree.from_json(t)
            for attempt in range(len(self.config.unsolved_retries) + 1)
            for r in self.dispatcher.results.job(self._search_job(number, attempt)).values()
            for t in r.get("trees", [])
        ]

    def _stage_extract(self, state: RoundState) -> None:
        trees = self._trees(state.round)
        data = extract(trees, self.config.pair_margin)
        directory = self.rounds.directory(state.round)
        # Held out by problem, not by pair: pairs of one problem share prefixes and would leak into training.
        # The held-out problems' trajectories stay out of the policy's SFT too: the PPM starts from the policy
        # and reads its likelihood, so a policy trained on those steps would make the held-out pairs easy.
        fraction = self.config.heldout_pair_fraction
        trajectories = [t for t in data.trajectories if not held_out(t.question, fraction)]
        write_jsonl(directory / "sft.jsonl", [asdict(t) for t in trajectories])
        heldout: list[dict[str, Any]] = []
        training: list[dict[str, Any]] = []
        for pair in data.pairs:
            (heldout if held_out(pair.question, fraction) else training).append(asdict(pair))
        write_jsonl(directory / "pairs_heldout.jsonl", heldout)
        write_jsonl(directory / "pairs.jsonl", training)
        pairs = heldout + training
        solved = {t.question for t in data.trajectories}
        # A retried problem has a tree from each pass: count problems, not trees.
        state.metrics["pool_solved"] = len(solved) / max(1, len({tree.question for tree in trees}))
        state.metrics["sft_trajectories"] = len(trajectories)
        state.metrics["ppm_pairs"] = len(pairs)

    def _accumulated(self, number: int, name: str) -> list[dict[str, Any]]:
        return [row for n in range(1, number + 1) for row in _rows(self.rounds.directory(n) / name)]

    def _stage_sft(self, state: RoundState) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from services.trainer.sft import train_sft

        rows = self._accumulated(state.round, "sft.jsonl")
        if not rows:
            # Nothing to learn from: the current models stay (the curriculum ladder may be too steep).
            state.state = "rejected"
            state.message = "no problem of any round was solved yet: nothing to fine-tune on; current models kept"
            self._report(state)
            return
        base = self.store.get("policy", self._base_policy())
        torch.manual_seed(self.config.seed + state.round)
        model = AutoModelForCausalLM.from_pretrained(base.path)
        tokenizer = AutoTokenizer.from_pretrained(base.path)
        c = self.config
        searched = [Trajectory(r["question"], tuple(r["steps"])) for r in rows]
        trajectories, replayed, steps = sft_mix(c, state.round, searched)
        metrics = train_sft(
            model,
            tokenizer,
            trajectories,
            replace(c.sft, max_steps=steps),
            progress=False,
            on_step=lambda done, total: self.progress("sft", done, total),
        )
        state.policy_version = self._publish_candidate(
            "policy",
            model,
            tokenizer,
            state,
            base=base.version,
            source="sft",
            data=f"{len(searched)} trajectories of rounds 1-{state.round} x{c.sft_weight}, {replayed} teacher",
            metrics=metrics,
        )
        state.metrics["sft_loss"] = metrics["final_loss"]

    def _publish_candidate(
        self,
        kind: str,
        model: Any,
        tokenizer: Any,
        state: RoundState,
        *,
        base: str,
        source: str,
        data: str,
        metrics: dict[str, float],
    ) -> str:
        """Stores a trained candidate without making it current (`publish` promotes it if it passes the gate)."""
        lineage = Lineage(base_model=f"policy {base}", round=state.round, source=source, data=data, metrics=metrics)
        return self.store.publish_pretrained(kind, model, tokenizer, lineage, make_current=False).version

    def _stage_ppm(self, state: RoundState) -> None:
        import torch
        from transformers import AutoTokenizer

        from services.ppm.model import ProcessRewardModel
        from services.trainer.ppm_train import group_pairs, train_ppm

        rows = self._accumulated(state.round, "pairs.jsonl")
        policy = self.store.get("policy", state.policy_version)
        tokenizer = AutoTokenizer.from_pretrained(policy.path)
        torch.manual_seed(self.config.seed + state.round)
        c = self.config
        model = ProcessRewardModel.from_pretrained(policy.path, likelihood=c.ppm.likelihood)
        searched = step_pairs(rows)
        rng = random.Random(c.seed + state.round)
        # About three corruptible steps per problem: a sixth of the wanted pairs per level is enough problems.
        teacher = [
            p
            for level in PPM_REPLAY_LEVELS
            for p in generate(level, max(1, c.ppm_replay // 6), seed=c.seed + 53 * state.round + level)
        ]
        replay = corrupted_pairs(teacher, rng)[: c.ppm_replay]
        pairs = searched + replay
        rng.shuffle(pairs)
        # A batch holds groups (one prefix and its candidate steps), so the epochs count groups.
        groups = len(group_pairs(pairs))
        steps = scaled_steps(groups, c.ppm_epochs, c.ppm.batch_size, c.ppm_min_steps, c.ppm.max_steps)
        metrics = train_ppm(
            model,
            tokenizer,
            pairs,
            replace(c.ppm, max_steps=steps),
            progress=False,
            on_step=lambda done, total: self.progress("ppm", done, total),
        )
        state.ppm_version = self._publish_candidate(
            "ppm",
            model,
            tokenizer,
            state,
            base=policy.version,
            source="bradley-terry",
            data=f"{len(searched)} tree pairs from rounds 1-{state.round} + {len(replay)} teacher-vs-corrupted",
            metrics=metrics,
        )

    def _evaluate(self, number: int, policy: str, ppm: str, heldout: list[StepPair]) -> dict[str, Any]:
        from services.trainer.evaluation import EvalPlan, evaluate_models

        c = self.config
        plan = EvalPlan(
            c.eval_levels, c.eval_per_level, c.eval_rollouts, c.candidates, c.frontier_problems, c.frontier_samples
        )
        results_dir = self.rounds.directory(number) / "eval"
        return evaluate_models(self.store, policy, ppm, plan, heldout, results_dir=results_dir)

    def _stage_evaluate(self, state: RoundState) -> None:
        # Every round's held-out pairs so far: one round's are too few to mean much (a handful of problems).
        rows = self._accumulated(state.round, "pairs_heldout.jsonl")
        heldout = step_pairs(rows)
        state.metrics.update(self._evaluate(state.round, state.policy_version, state.ppm_version, heldout))
        state.metrics["heldout_pairs"] = len(heldout)

    def _stage_publish(self, state: RoundState) -> None:
        previous = self._latest_published(state.round)
        regressed = regressions(previous.metrics if previous else {}, state.metrics, self.config.regression_gate)
        if regressed:
            state.state = "rejected"
            state.message = f"regressed past the gate ({'; '.join(regressed)}): current models kept"
        else:
            self.store.promote("policy", state.policy_version)
            self.store.promote("ppm", state.ppm_version)
            if self.on_publish is not None:
                self.on_publish(state.policy_version, state.ppm_version)
            state.state = "succeeded"
        self._report(state)

    def _latest_published(self, number: int) -> RoundState | None:
        for n in range(number - 1, -1, -1):
            earlier = self.rounds.state(n)
            if earlier is not None and earlier.state == "succeeded":
                return earlier
        return None

    def _report(self, state: RoundState) -> None:
        from services.trainer.report import write_reports

        write_reports(self.rounds, state)
