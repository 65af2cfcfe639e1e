"""The round's small rules: where the pool sits, how steps follow the data, the held-out split, the gate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.store import ModelStore
from services.math.stepfmt import render_answer
from services.search.engine.mcts import SearchConfig, Tree
from services.search.protocol import SolveTask
from services.trainer.config import preset
from services.trainer.dispatch import SearchJob, SearchOutcome
from services.trainer.rounds import RoundRunner, Rounds, RoundState, held_out, regressions, scaled_steps
from services.trainer.rounds.stages import run_search


def runner(tmp_path: Path, **overrides: object) -> RoundRunner:
    return RoundRunner(ModelStore(tmp_path), preset("default", **overrides), dispatcher=None)  # type: ignore[arg-type]


def test_the_pool_sits_around_the_latest_published_frontier(tmp_path: Path) -> None:
    rounds = Rounds(ModelStore(tmp_path))
    rounds.save(RoundState(round=0, state="succeeded", metrics={"frontier_level": 3}))
    assert runner(tmp_path).context.pool_levels(1) == (2, 3, 3, 4)
    rounds.save(RoundState(round=1, state="succeeded", metrics={"frontier_level": 4}))
    rounds.save(RoundState(round=2, state="rejected", metrics={"frontier_level": 5}))  # not published: ignored
    assert runner(tmp_path).context.pool_levels(3) == (3, 4, 4, 5)
    rounds.save(RoundState(round=3, state="succeeded", metrics={"frontier_level": 5}))
    assert runner(tmp_path).context.pool_levels(4) == (4, 5, 5, 5)  # clipped to the curriculum's levels


def test_evolve_runs_rounds_up_to_the_last_and_a_rerun_only_resumes(tmp_path: Path) -> None:
    rounds = Rounds(ModelStore(tmp_path))
    assert rounds.to_run(3) == 3  # a fresh store: rounds 1, 2 and 3
    rounds.save(RoundState(round=0, state="succeeded"))
    rounds.save(RoundState(round=1, state="succeeded"))
    rounds.save(RoundState(round=2, state="running"))  # interrupted: run again, not counted as done
    assert rounds.to_run(3) == 2
    rounds.save(RoundState(round=2, state="rejected"))  # finished, though not published
    rounds.save(RoundState(round=3, state="failed"))  # resumable
    assert rounds.to_run(3) == 1
    rounds.save(RoundState(round=3, state="succeeded"))
    assert rounds.to_run(3) == 0 and rounds.to_run(5) == 2


def test_configured_pool_levels_win_and_weight_by_repetition(tmp_path: Path) -> None:
    chosen = runner(tmp_path, pool_levels=(2, 3, 3), pool_size=9)
    pool = chosen.context.pool(1)
    assert len(pool) == 9
    levels = [p.problem_id.split("-")[1] for p in pool]
    assert levels.count("L2") == 3 and levels.count("L3") == 6


def test_steps_follow_the_data_within_bounds() -> None:
    assert scaled_steps(1600, 2.0, 16, 100, 500) == 200
    assert scaled_steps(10, 2.0, 16, 100, 500) == 100
    assert scaled_steps(100_000, 2.0, 16, 100, 500) == 500


def test_held_out_pairs_are_split_by_problem_and_stable() -> None:
    questions = [f"What is {n} + {n}?" for n in range(2000)]
    chosen = [q for q in questions if held_out(q, 0.15)]
    assert 0.12 < len(chosen) / len(questions) < 0.18
    assert chosen == [q for q in questions if held_out(q, 0.15)]
    assert not any(held_out(q, 0.0) for q in questions)


def test_the_gate_watches_greedy_as_well_as_mcts() -> None:
    before = {"mcts_accuracy": 0.10, "greedy_accuracy": 0.10}
    assert regressions(before, {"mcts_accuracy": 0.10, "greedy_accuracy": 0.06}, 0.05) == []
    dropped = regressions(before, {"mcts_accuracy": 0.15, "greedy_accuracy": 0.02}, 0.05)
    assert dropped == ["greedy accuracy 0.020 < 0.100"]
    assert len(regressions(before, {"mcts_accuracy": 0.0, "greedy_accuracy": 0.0}, 0.05)) == 2
    assert regressions({}, {"mcts_accuracy": 0.0}, 0.05) == []  # nothing published yet: nothing to regress from


def test_stage_bars_keep_one_bar_per_stage() -> None:
    from services.trainer.progress import StageBars

    bars = StageBars(prefix="round 1 ")
    for done in range(1, 4):
        bars("sft", done, 3)
    bars("ppm", 1, 5)
    sft = bars.bars["sft"]
    assert len(bars.bars) == 2 and sft.n == 3 and sft.total == 3 and sft.desc == "round 1 sft"
    bars.close()
    assert bars.bars == {}


def test_evolve_takes_pool_levels_from_the_command_line() -> None:
    import argparse

    import pytest

    from services.cli.trainer import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["evolve", "--pool-levels", "3,3,4"]).pool_levels == (3, 3, 4)
    assert parser.parse_args(["evolve"]).pool_levels is None  # the preset's: around the frontier
    for bad in ("3,x", "0", "6", ""):
        with pytest.raises(SystemExit):
            parser.parse_args(["evolve", "--pool-levels", bad])


class _ScriptedDispatcher:
    """Stands in for Celery: a problem counts as solved when `solves(job, problem)` says so."""

    def __init__(self, solves: Callable[[str, SolveTask], bool]) -> None:
        self.solves = solves
        self.sent: dict[str, list[SolveTask]] = {}
        self.stored: dict[str, dict[str, dict[str, Any]]] = {}
        self.results = self

    def run(self, job: SearchJob, progress: object = None) -> SearchOutcome:
        stored = self.stored.setdefault(job.job, {})
        for problem in job.problems:
            if problem.problem_id in stored:
                continue  # as the real dispatcher: a stored result is never searched again
            self.sent.setdefault(job.job, []).append(problem)
            tree = Tree(problem.question, SearchConfig()).to_json()
            if self.solves(job.job, problem):
                answer = {
                    "id": 1,
                    "parent": 0,
                    "terminal": True,
                    "reward": 1.0,
                    "answer": "1",
                    "step": render_answer("1"),
                }
                tree["nodes"].append({**tree["nodes"][0], **answer})
            stored[problem.problem_id] = {"trees": [tree]}
        return SearchOutcome(stored, {})

    def job(self, name: str) -> dict[str, dict[str, Any]]:
        return self.stored.get(name, {})


def _terminal(node_id: int, answer: str, right: bool) -> dict[str, Any]:
    return {
        "id": node_id,
        "parent": 0,
        "step": render_answer(answer),
        "depth": 1,
        "terminal": True,
        "reward": 1.0 if right else -1.0,
        "answer": answer,
    }


def test_the_problems_solved_only_sometimes_are_searched_again_with_the_frontier_budget(tmp_path: Path) -> None:
    from services.trainer.config import parse_retries

    class Mixed(_ScriptedDispatcher):
        """Index % 3: 0 — one path right, one wrong; 1 — both right; 2 — both wrong."""

        def run(self, job: SearchJob, progress: object = None) -> SearchOutcome:
            stored = self.stored.setdefault(job.job, {})
            for problem in job.problems:
                self.sent.setdefault(job.job, []).append(problem)
                index = int(problem.problem_id.rsplit("-", 1)[1])
                tree = Tree(problem.question, SearchConfig()).to_json()
                rights = {0: (True, False), 1: (True, True), 2: (False, False)}[index % 3]
                for node_id, right in enumerate(rights, start=1):
                    tree["nodes"].append({**tree["nodes"][0], **_terminal(node_id, "1" if right else "2", right)})
                stored[problem.problem_id] = {"trees": [tree]}
            return SearchOutcome(stored, {})

    dispatcher = Mixed(lambda job, problem: False)
    config = preset("default", pool_size=9, pool_levels=(2,), frontier_retries=parse_retries("16:8"))
    chosen = RoundRunner(ModelStore(tmp_path), config, dispatcher=dispatcher)  # type: ignore[arg-type]
    state = RoundState(round=1)
    run_search(chosen.context, state)

    again = dispatcher.sent["rounds/0001/frontier-1"]
    assert [int(p.problem_id.rsplit("-", 1)[1]) % 3 for p in again] == [0, 0, 0]
    assert {(p.rollouts, p.candidates) for p in again} == {(16, 8)}
    assert {p.seed for p in again}.isdisjoint({p.seed for p in dispatcher.sent["rounds/0001/trees"]})
    assert state.metrics["frontier_searched"] == 3
    assert len(chosen.context.trees(1)) == 9 + 3  # the frontier pass's trees reach the extraction


def test_unsolved_problems_are_searched_again_with_each_retrys_budget(tmp_path: Path) -> None:
    from services.trainer.config import parse_retries

    def solves(job: str, problem: SolveTask) -> bool:
        index = int(problem.problem_id.rsplit("-", 1)[1])
        return index % 3 == 0 if job.endswith("/trees") else job.endswith("retry-1") and index % 3 == 1

    dispatcher = _ScriptedDispatcher(solves)
    chosen = RoundRunner(
        ModelStore(tmp_path),
        preset("default", pool_size=9, pool_levels=(2,), unsolved_retries=parse_retries("16:8,32:16")),
        dispatcher=dispatcher,  # type: ignore[arg-type]
    )
    state = RoundState(round=1)
    run_search(chosen.context, state)
    sent = dispatcher.sent
    first, retry1, retry2 = (sent[f"rounds/0001/{name}"] for name in ("trees", "retry-1", "retry-2"))
    assert len(first) == 9 and {(p.rollouts, p.candidates) for p in first} == {(8, 4)}
    assert [p.problem_id for p in retry1] == [p.problem_id for p in first if not solves("x/trees", p)]
    assert {(p.rollouts, p.candidates) for p in retry1} == {(16, 8)}
    assert [int(p.problem_id.rsplit("-", 1)[1]) % 3 for p in retry2] == [2, 2, 2]
    assert {(p.rollouts, p.candidates) for p in retry2} == {(32, 16)}
    assert len({p.seed for p in (first[0], retry1[0], retry2[0])}) == 3
    assert (state.metrics["retried"], state.metrics["solved_by_retries"]) == (6, 3)
    assert len(chosen.context.trees(1)) == 9 + 6 + 3  # every pass's trees reach the extraction

    # Resumed (the same stored results): nothing is sent again.
    dispatcher.sent.clear()
    run_search(chosen.context, RoundState(round=1))
    assert dispatcher.sent == {}


def test_retries_are_rollouts_colon_candidates_wherever_they_are_given() -> None:
    import argparse

    import pytest

    from services.cli.trainer import register
    from services.common.settings import ConfigError, load_settings
    from services.trainer.config import parse_retries
    from services.trainer.settings import TrainerSettings

    assert parse_retries("") == ()
    assert parse_retries("64:16, 128:16") == ((64, 16), (128, 16))
    for bad in ("64", "64:0", "a:b", "64:16:2"):
        with pytest.raises(ValueError, match="ROLLOUTS:CANDIDATES"):
            parse_retries(bad)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["evolve", "--unsolved-retries", "64:16"]).unsolved_retries == ((64, 16),)
    with pytest.raises(SystemExit):
        parser.parse_args(["evolve", "--unsolved-retries", "64"])
    assert load_settings(TrainerSettings, {"THINKMESH_TRAINER_UNSOLVED_RETRIES": "64:16"}).unsolved_retries == "64:16"
    with pytest.raises(ConfigError, match="THINKMESH_TRAINER_UNSOLVED_RETRIES"):
        load_settings(TrainerSettings, {"THINKMESH_TRAINER_UNSOLVED_RETRIES": "64"})


def test_the_report_shows_retry_columns_only_when_a_round_retried() -> None:
    from services.trainer.rounds.report import markdown_table

    plain = [RoundState(round=0, metrics={"pool_solved": 0.5}), RoundState(round=1, metrics={"pool_solved": 0.4})]
    assert "retried" not in markdown_table(plain)
    retried = [*plain, RoundState(round=2, metrics={"pool_solved": 0.45, "retried": 11, "solved_by_retries": 3})]
    header, rule, *rows = markdown_table(retried).splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    assert names[names.index("pool solved") + 1 : names.index("pool solved") + 3] == ["retried", "solved by retries"]
    assert rule.count("|---") == len(names)
    cells = [cell.strip() for cell in rows[2].strip("|").split("|")]
    assert cells[names.index("retried")] == "11" and cells[names.index("solved by retries")] == "3"
    assert [cell.strip() for cell in rows[0].strip("|").split("|")][names.index("retried")] == "–"


def test_the_report_shows_how_training_ran_only_when_a_round_trained_on_several_processes() -> None:
    from services.trainer.rounds.report import markdown_table

    one = [RoundState(round=1, metrics={"sft_world_size": 1, "ppm_world_size": 1, "sft_tokens_per_s": 900.0})]
    assert "SFT ranks" not in markdown_table(one)
    eight = [*one, RoundState(round=2, metrics={"sft_world_size": 8, "sft_tokens_per_s": 51234.5, "ppm_world_size": 8})]
    header, _, *rows = markdown_table(eight).splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    cells = [cell.strip() for cell in rows[1].strip("|").split("|")]
    assert (cells[names.index("SFT ranks")], cells[names.index("SFT tokens/s")]) == ("8", "51234.500")


def test_the_stages_run_in_one_fixed_order_under_their_saved_names() -> None:
    from services.trainer.rounds import STAGE_NAMES, STAGES

    # The names are saved in every round's state.json (`stage`, `finished`): a renamed stage would not resume.
    assert STAGE_NAMES == ("search", "extract", "sft", "ppm", "evaluate", "publish")
    assert [stage.name for stage in STAGES] == list(STAGE_NAMES)


def test_the_papers_rounds_fix_their_search_whatever_the_rounds_number() -> None:
    from services.trainer.rounds.rules import pool

    expected = {  # rollouts, candidates, q_mode, code errors, temperature
        "rstar-r1": (8, 5, "terminal", 2, 0.7),
        "rstar-r2": (16, 8, "terminal", 1, 1.0),
        "rstar-r3": (16, 8, "ppm", 1, 1.0),
        "rstar-r4": (16, 8, "ppm", 1, 1.0),
    }
    for name, (rollouts, candidates, q_mode, errors, temperature) in expected.items():
        config = preset(name, pool_size=2, pool_levels=(1,))
        for number in (1, 2, 5):
            tasks = pool(config, number, (1,))
            got = {(t.rollouts, t.candidates, t.q_mode, t.max_code_errors, t.temperature, t.max_depth) for t in tasks}
            assert got == {(rollouts, candidates, q_mode, errors, temperature, 16)}, (name, number)
            assert {t.max_new_tokens for t in tasks} == {2048}
        assert (config.sft.max_length, config.ppm.max_length, config.sft.learning_rate) == (4096, 2048, 7e-6)
        assert config.sft_replay == config.ppm_replay == 0  # real problems: no synthetic replay
    assert preset("rstar-r4").unsolved_retries == ((64, 16), (128, 16))
    # The embedded presets leave sampling to the search tier, as before.
    assert {(t.temperature, t.max_new_tokens) for t in pool(preset("tiny"), 1, (1,))} == {(None, 0)}
