"""The stages of a round, in order, as one explicit list (`STAGES`) that the runner walks:

    search    one Celery `solve` task per pool problem (training mode: reference answers given)
    extract   SFT trajectories and PPM pairs from the finished trees (services/trainer/extract.py)
    sft       the policy, fine-tuned from the round-0 model on every round's SFT data so far
    ppm       the PPM, initialised from the new policy, trained on every round's pairs so far
    evaluate  held-out accuracy (greedy, maj, bon, MCTS) and the frontier, for the candidates
    publish   promote the candidates unless they regress past the gate

A stage's name is what `state.json` records in `stage` and `finished`, so the names must not change: a saved
round resumes at the first stage whose name it has not finished. Each stage writes its output into `rounds/<n>/`
and records its results in the RoundState; candidates are published as non-current versions and only promoted
by `publish`.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.common.jsonfiles import write_jsonl
from services.common.store import Lineage, ModelStore, ModelVersion
from services.math.curriculum import generate
from services.search.engine.mcts import Tree
from services.search.protocol import SolveTask
from services.trainer.config import RoundConfig
from services.trainer.corrupt import corrupted_pairs, trajectory_pairs
from services.trainer.data import PPMConfig, SFTConfig, StepPair, Trajectory, read_trajectories, step_pairs
from services.trainer.dispatch import CeleryDispatcher, SearchJob
from services.trainer.extract import extract
from services.trainer.rounds import rules
from services.trainer.rounds.paired import paired
from services.trainer.rounds.report import write_reports
from services.trainer.rounds.state import Rounds, RoundState
from services.trainer.training.launch import Launcher, LocalLauncher
from services.trainer.training.spec import Strategy, TrainingResult

if TYPE_CHECKING:  # the evaluation's module loads the model code: the evaluate stage imports it when it runs
    from services.trainer.evaluation import OpenSandbox

log = logging.getLogger(__name__)


@dataclass
class RoundContext:
    """What the stages work with: the store and its rounds, the config, the search dispatcher and the hooks."""

    store: ModelStore
    rounds: Rounds
    config: RoundConfig
    dispatcher: CeleryDispatcher
    progress: Callable[[str, int, int], None]
    on_publish: Callable[[str, str], None] | None = None
    before_search: Callable[[], None] | None = None  # e.g. wait until the services serve the current versions
    sandbox: OpenSandbox | None = None  # where evaluations run programs; None: in process
    # Where the training stages run (in this process by default) and how they use their hardware.
    launcher: Launcher = field(default_factory=LocalLauncher)
    strategy: Strategy = field(default_factory=Strategy)

    def pool_levels(self, number: int) -> tuple[int, ...]:
        """The configured levels, or the frontier of the latest published round with its neighbours."""
        latest = self.rounds.latest_published(number)
        frontier = rules.DEFAULT_FRONTIER
        if latest is not None:
            frontier = int(latest.metrics.get("frontier_level", rules.DEFAULT_FRONTIER))
        return rules.pool_levels(self.config.pool_levels, frontier)

    def pool(self, number: int) -> list[SolveTask]:
        return rules.pool(self.config, number, self.pool_levels(number))

    def trees(self, number: int) -> list[Tree]:
        """Every search pass's trees of round `number` (the pool's and each retry's)."""
        return [
            Tree.from_json(t)
            for job in rules.search_jobs(self.config, number)
            for r in self.dispatcher.results.job(job).values()
            for t in r.get("trees", [])
        ]

    def base_policy(self) -> str:
        """The round-0 model every round's SFT starts from (the paper re-trains from the base each round)."""
        round_zero = [v for v in self.store.versions("policy") if v.lineage.round == 0]
        if not round_zero:
            raise RuntimeError("no round-0 policy in the store: run `thinkmesh bootstrap` first")
        return round_zero[0].version

    def publish_candidate(
        self,
        kind: str,
        trained: Path,
        state: RoundState,
        *,
        base: str,
        source: str,
        data: str,
        metrics: dict[str, float],
    ) -> str:
        """Stores the model a stage trained into `trained` (moving its files) without making it current (`publish`
        promotes it if it passes the gate). It keeps the prompt format of the policy `base` it was trained from."""
        lineage = Lineage(base_model=f"policy {base}", round=state.round, source=source, data=data, metrics=metrics)
        prompt_format = self.store.get("policy", base).prompt_format
        published = self.store.import_directory(
            kind, trained, lineage, make_current=False, prompt_format=prompt_format, move=True
        )
        return published.version

    def evaluate(self, number: int, policy: str, ppm: str, heldout: list[StepPair]) -> dict[str, Any]:
        from services.trainer.evaluation import EvalPlan, evaluate_models

        c = self.config
        plan = EvalPlan(
            c.eval_levels,
            c.eval_per_level,
            c.eval_rollouts,
            c.search.candidates,
            c.frontier_problems,
            c.frontier_samples,
            dataset=c.eval_dataset,
            size=c.eval_size,
            sampled_per_level=c.eval_sampled_per_level,
            mcts_levels=c.eval_mcts_levels,
        )
        results_dir = self.rounds.directory(number) / "eval"
        return evaluate_models(self.store, policy, ppm, plan, heldout, results_dir=results_dir, sandbox=self.sandbox)

    def report(self, state: RoundState) -> None:
        write_reports(self.rounds, state)


def run_search(context: RoundContext, state: RoundState) -> None:
    if context.config.supplied(state.round):
        return  # round 1 trains on the supplied trajectories (`extract` reads them)
    if context.before_search is not None:
        context.before_search()
    pool = context.pool(state.round)
    state.problems_total = len(pool)

    def progress(done: int, total: int) -> None:
        state.problems_done = done
        context.progress("search", done, total)

    outcome = context.dispatcher.run(SearchJob(rules.search_job(state.round, 0), pool), progress)
    # A problem whose search failed after its retries is left out (its trees are missing); the report counts it.
    state.metrics["search_failed"] = len(outcome.failed)
    _search_frontier(context, state, pool, outcome.results)
    if not context.config.unsolved_retries:
        return
    solved = rules.solved(outcome.results, context.config.numbers)
    first_solved = len(solved)
    for attempt, (rollouts, candidates) in enumerate(context.config.unsolved_retries, start=1):
        # Each pass's problems follow from the stored results, so a resumed round sends the same ones.
        unsolved = [
            replace(p, rollouts=rollouts, candidates=candidates, seed=p.seed + 1_000 * attempt)
            for p in pool
            if p.problem_id not in solved
        ]
        if not unsolved:
            break
        job = SearchJob(rules.search_job(state.round, attempt), unsolved)
        retried = context.dispatcher.run(job, functools.partial(context.progress, f"retry {attempt}"))
        solved |= rules.solved(retried.results, context.config.numbers)
    state.metrics["retried"] = len(pool) - first_solved
    state.metrics["solved_by_retries"] = len(solved) - first_solved


def _search_frontier(
    context: RoundContext, state: RoundState, pool: list[SolveTask], first: dict[str, dict[str, Any]]
) -> None:
    """The frontier passes: the problems the first search solved sometimes, searched again with each pass's budget
    (chosen from the stored results, so a resumed round sends the same ones)."""
    passes = context.config.frontier_retries
    if not passes:
        return
    chosen = rules.sometimes_solved(first, context.config.numbers)
    for attempt, (rollouts, candidates) in enumerate(passes, start=1):
        problems = [
            replace(p, rollouts=rollouts, candidates=candidates, seed=p.seed + 500_000 + 1_000 * attempt)
            for p in pool
            if p.problem_id in chosen
        ]
        if problems:
            job = SearchJob(rules.frontier_job(state.round, attempt), problems)
            context.dispatcher.run(job, functools.partial(context.progress, f"frontier {attempt}"))
    state.metrics["frontier_searched"] = len(chosen)


def run_extract(context: RoundContext, state: RoundState) -> None:
    if context.config.supplied(state.round):
        _extract_supplied(context, state)
        return
    trees = context.trees(state.round)
    data = extract(trees, context.config.pair_margin, context.config.numbers)
    directory = context.rounds.directory(state.round)
    # Held out by problem, not by pair: pairs of one problem share prefixes and would leak into training.
    # The held-out problems' trajectories stay out of the policy's SFT too: the PPM starts from the policy
    # and reads its likelihood, so a policy trained on those steps would make the held-out pairs easy.
    fraction = context.config.heldout_pair_fraction
    trajectories = [t for t in data.trajectories if not rules.held_out(t.question, fraction)]
    write_jsonl(directory / "sft.jsonl", [asdict(t) for t in trajectories])
    heldout: list[dict[str, Any]] = []
    training: list[dict[str, Any]] = []
    for pair in data.pairs:
        (heldout if rules.held_out(pair.question, fraction) else training).append(asdict(pair))
    write_jsonl(directory / "pairs_heldout.jsonl", heldout)
    write_jsonl(directory / "pairs.jsonl", training)
    pairs = heldout + training
    solved = {t.question for t in data.trajectories}
    # A retried problem has a tree from each pass: count problems, not trees.
    state.metrics["pool_solved"] = len(solved) / max(1, len({tree.question for tree in trees}))
    state.metrics["sft_trajectories"] = len(trajectories)
    state.metrics["ppm_pairs"] = len(pairs)
    # What was not taught, and why (right answers only: a wrong one is never an SFT trajectory).
    state.metrics["sft_dropped_foreign_number"] = data.dropped.get("foreign number", 0)
    state.metrics["sft_dropped_code_error"] = data.dropped.get("code error", 0)
    state.metrics["lone_solutions"] = data.lone


def _extract_supplied(context: RoundContext, state: RoundState) -> None:
    """Round 1 from supplied trajectories: SFT data as they are, PPM pairs of each step against corrupted versions
    of it (the bootstrap's kind), held out by problem as a search's are."""
    c = context.config
    supplied = read_trajectories(Path(c.sft_file))
    fraction = c.heldout_pair_fraction
    directory = context.rounds.directory(state.round)
    trained = [t for t in supplied if not rules.held_out(t.question, fraction)]
    write_jsonl(directory / "sft.jsonl", [asdict(t) for t in trained])
    pairs = trajectory_pairs(supplied, random.Random(c.seed + state.round))
    heldout = [asdict(p) for p in pairs if rules.held_out(p.question, fraction)]
    write_jsonl(directory / "pairs_heldout.jsonl", heldout)
    write_jsonl(directory / "pairs.jsonl", [asdict(p) for p in pairs if not rules.held_out(p.question, fraction)])
    state.metrics["supplied_trajectories"] = len(supplied)
    state.metrics["sft_trajectories"] = len(trained)
    state.metrics["ppm_pairs"] = len(pairs)


def _pool_note(config: RoundConfig) -> str:
    """Where the searched problems came from, for a candidate's lineage."""
    supplied = f"; round 1 from {config.sft_file}" if config.sft_file else ""
    teacher = f"; round 1 searched by the teacher at {config.teacher_target}" if config.teacher_target else ""
    return (f"; pool {config.pool_file}" if config.pool_file else "; pool: curriculum") + supplied + teacher


def _reject(context: RoundContext, state: RoundState, why: str) -> None:
    """The round ends here without new models: the current ones stay."""
    state.state = "rejected"
    state.message = f"{why}; current models kept"
    context.report(state)


def _train(
    context: RoundContext,
    state: RoundState,
    stage: str,
    base: ModelVersion,
    rows: list[dict[str, Any]],
    recipe: SFTConfig | PPMConfig,
) -> TrainingResult:
    """Writes the stage's training data into the round's directory and runs the stage through the context's
    launcher (in this process, torchrun beside it, or a Kubernetes Job); its metrics. The trained model waits in
    `rounds/<n>/train/<stage>/model/` until `publish_candidate` takes it."""
    from services.trainer.training.spec import TrainingSpec

    directory = context.rounds.directory(state.round) / "train"
    data = directory / f"{stage}.jsonl"
    write_jsonl(data, rows)
    spec = TrainingSpec(
        stage=stage,  # type: ignore[arg-type]
        data=str(data.resolve()),
        base=str(base.path.resolve()),
        out=str((directory / stage).resolve()),
        recipe=recipe,
        strategy=context.strategy,
        prompt_format=base.prompt_format,
    )
    result = context.launcher.run(
        spec,
        name=f"r{state.round}-{stage}",
        on_progress=lambda p: context.progress(stage, p.step, p.max_steps),
    )
    state.metrics[f"{stage}_dropped_long"] = result.dropped_too_long
    state.metrics[f"{stage}_world_size"] = result.world_size
    state.metrics[f"{stage}_tokens_per_s"] = round(result.tokens_per_s, 1)
    return result


def _lineage_metrics(result: TrainingResult) -> dict[str, float]:
    """What a trained version's lineage records of the stage that trained it."""
    return {
        "train_loss": result.train_loss,
        "final_loss": result.final_loss,
        "steps": float(result.steps),
        "seconds": result.seconds,
        "dropped_too_long": float(result.dropped_too_long),
        "world_size": float(result.world_size),
    }


def run_sft(context: RoundContext, state: RoundState) -> None:
    from transformers import AutoTokenizer

    from services.trainer.sft import TooLong, sft_examples

    rows = context.rounds.accumulated(state.round, "sft.jsonl")
    if not rows:
        # Nothing to learn from: the current models stay (the curriculum ladder may be too steep).
        if context.config.supplied(state.round):
            why = "every supplied trajectory's problem is held out for the PPM's pairs: supply more problems"
        else:
            why = "no problem of any round was solved yet: nothing to fine-tune on"
        _reject(context, state, why)
        return
    base = context.store.get("policy", context.base_policy())
    c = context.config
    searched = [Trajectory(r["question"], tuple(r["steps"])) for r in rows]
    trajectories, replayed, steps = rules.sft_mix(c, state.round, searched)
    recipe = replace(c.sft, max_steps=steps)
    try:  # here, before any rank starts: a stage with nothing that fits rejects the round instead of failing it
        sft_examples(AutoTokenizer.from_pretrained(base.path), trajectories, recipe, base.prompt_format)
    except TooLong as exc:
        _reject(context, state, f"SFT: {exc}; raise the preset's sft max_length or shorten the steps")
        return
    result = _train(context, state, "sft", base, [asdict(t) for t in trajectories], recipe)
    state.policy_version = context.publish_candidate(
        "policy",
        Path(result.out),
        state,
        base=base.version,
        source="sft",
        data=f"{len(searched)} trajectories of rounds 1-{state.round} x{c.sft_weight}, {replayed} teacher"
        + _pool_note(c),
        metrics=_lineage_metrics(result),
    )
    state.metrics["sft_loss"] = result.final_loss


def run_ppm(context: RoundContext, state: RoundState) -> None:
    from transformers import AutoTokenizer

    from services.trainer.ppm_train import group_pairs, ppm_examples
    from services.trainer.sft import TooLong

    rows = context.rounds.accumulated(state.round, "pairs.jsonl")
    policy = context.store.get("policy", state.policy_version)
    c = context.config
    searched = step_pairs(rows)
    rng = random.Random(c.seed + state.round)
    # About three corruptible steps per problem: a sixth of the wanted pairs per level is enough problems.
    wanted = c.ppm_replay if c.replays_curriculum else 0
    teacher = [
        p
        for level in (rules.PPM_REPLAY_LEVELS if wanted else ())
        for p in generate(level, max(1, wanted // 6), seed=c.seed + 53 * state.round + level)
    ]
    replay = corrupted_pairs(teacher, rng)[:wanted]
    pairs = searched + replay
    rng.shuffle(pairs)
    # A batch holds groups (one prefix and its candidate steps), so the epochs count groups.
    groups = len(group_pairs(pairs))
    steps = rules.scaled_steps(groups, c.ppm_epochs, c.ppm.batch_size, c.ppm_min_steps, c.ppm.max_steps)
    recipe = replace(c.ppm, max_steps=steps)
    try:
        ppm_examples(AutoTokenizer.from_pretrained(policy.path), pairs, recipe, policy.prompt_format)
    except TooLong as exc:
        _reject(context, state, f"PPM: {exc}; raise the preset's ppm max_length")
        return
    result = _train(context, state, "ppm", policy, [asdict(p) for p in pairs], recipe)
    state.ppm_version = context.publish_candidate(
        "ppm",
        Path(result.out),
        state,
        base=policy.version,
        source="bradley-terry",
        data=f"{len(searched)} tree pairs from rounds 1-{state.round} + {len(replay)} teacher-vs-corrupted"
        + _pool_note(c),
        metrics=_lineage_metrics(result),
    )


def run_evaluate(context: RoundContext, state: RoundState) -> None:
    # Every round's held-out pairs so far: one round's are too few to mean much (a handful of problems).
    heldout = step_pairs(context.rounds.accumulated(state.round, "pairs_heldout.jsonl"))
    state.metrics.update(context.evaluate(state.round, state.policy_version, state.ppm_version, heldout))
    state.metrics["heldout_pairs"] = len(heldout)
    # Problem by problem against the models this round would replace, and against the bootstrap's.
    here = context.rounds.directory(state.round) / "eval"
    previous = context.rounds.latest_published(state.round)
    if previous is not None:
        state.metrics["paired_previous_round"] = previous.round
        state.metrics["paired_previous"] = paired(context.rounds.directory(previous.round) / "eval", here)
        for method, groups in state.metrics["paired_previous"].items():  # flat, for GetRound's numeric metrics
            for key in ("gained", "lost", "p"):
                state.metrics[f"{method}_{key}_vs_previous"] = groups["all"][key]
        if previous.round != 0:
            state.metrics["paired_round0"] = paired(context.rounds.directory(0) / "eval", here)


def run_publish(context: RoundContext, state: RoundState) -> None:
    previous = context.rounds.latest_published(state.round)
    gate = context.config.regression_gate
    regressed = rules.regressions(previous.metrics if previous else {}, state.metrics, gate)
    if regressed:
        state.state = "rejected"
        state.message = f"regressed past the gate of {gate:g} ({'; '.join(regressed)}): current models kept"
        log.warning("round %d rejected: %s", state.round, state.message)
    else:
        context.store.promote("policy", state.policy_version)
        context.store.promote("ppm", state.ppm_version)
        if context.on_publish is not None:
            context.on_publish(state.policy_version, state.ppm_version)
        state.state = "succeeded"
    context.report(state)


@dataclass(frozen=True)
class Stage:
    """One step of a round: `name` is what `state.json` records, `run` does the work on the round's state."""

    name: str
    run: Callable[[RoundContext, RoundState], None]


# The order of a round. A stage may end the round early by setting `state.state` (sft and publish reject).
STAGES: tuple[Stage, ...] = (
    Stage("search", run_search),
    Stage("extract", run_extract),
    Stage("sft", run_sft),
    Stage("ppm", run_ppm),
    Stage("evaluate", run_evaluate),
    Stage("publish", run_publish),
)
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
