"""The round's small rules: where the pool sits, how steps follow the data, the held-out split, the gate."""

from __future__ import annotations

from pathlib import Path

from services.common.store import ModelStore
from services.trainer.config import preset
from services.trainer.rounds import RoundRunner, Rounds, RoundState, held_out, regressions, scaled_steps


def runner(tmp_path: Path, **overrides: object) -> RoundRunner:
    return RoundRunner(ModelStore(tmp_path), preset("default", **overrides), dispatcher=None)  # type: ignore[arg-type]


def test_the_pool_sits_around_the_latest_published_frontier(tmp_path: Path) -> None:
    rounds = Rounds(ModelStore(tmp_path))
    rounds.save(RoundState(round=0, state="succeeded", metrics={"frontier_level": 3}))
    assert runner(tmp_path).pool_levels(1) == (2, 3, 3, 4)
    rounds.save(RoundState(round=1, state="succeeded", metrics={"frontier_level": 4}))
    rounds.save(RoundState(round=2, state="rejected", metrics={"frontier_level": 5}))  # not published: ignored
    assert runner(tmp_path).pool_levels(3) == (3, 4, 4, 5)
    rounds.save(RoundState(round=3, state="succeeded", metrics={"frontier_level": 5}))
    assert runner(tmp_path).pool_levels(4) == (4, 5, 5, 5)  # clipped to the curriculum's levels


def test_configured_pool_levels_win_and_weight_by_repetition(tmp_path: Path) -> None:
    chosen = runner(tmp_path, pool_levels=(2, 3, 3), pool_size=9)
    pool = chosen._pool(1)
    assert len(pool) == 9
    levels = [p["problem_id"].split("-")[1] for p in pool]
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

    from services.trainer.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["evolve", "--pool-levels", "3,3,4"]).pool_levels == (3, 3, 4)
    assert parser.parse_args(["evolve"]).pool_levels is None  # the preset's: around the frontier
    for bad in ("3,x", "0", "6", ""):
        with pytest.raises(SystemExit):
            parser.parse_args(["evolve", "--pool-levels", bad])
