"""The publishing gate: every preset has one that refuses a collapse, and the publish stage obeys it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.store import Lineage, ModelStore
from services.trainer.config import PRESETS, RoundConfig, preset
from services.trainer.rounds import Rounds, RoundState, regressions
from services.trainer.rounds.stages import RoundContext, run_publish

PERFECT = {"mcts_accuracy": 1.0, "greedy_accuracy": 1.0}
COLLAPSED = {"mcts_accuracy": 0.0, "greedy_accuracy": 0.0}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_refuses_a_round_that_fell_from_one_to_zero(name: str) -> None:
    gate = preset(name).regression_gate
    assert 0.0 <= gate < 1.0
    assert regressions(PERFECT, COLLAPSED, gate) == ["MCTS accuracy 0.000 < 1.000", "greedy accuracy 0.000 < 1.000"]


def test_the_tiny_preset_lets_noise_through_and_stops_a_collapse() -> None:
    gate = preset("tiny").regression_gate  # 4 held-out problems: one of them is 0.25
    assert regressions(PERFECT, {"mcts_accuracy": 0.5, "greedy_accuracy": 0.75}, gate) == []
    assert regressions(PERFECT, {"mcts_accuracy": 0.25, "greedy_accuracy": 1.0}, gate) == [
        "MCTS accuracy 0.250 < 1.000"
    ]


@pytest.mark.parametrize("threshold", [1.0, 2.0, -0.1, float("nan"), float("inf")])
def test_a_gate_that_could_refuse_nothing_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="regression_gate"):
        RoundConfig(regression_gate=threshold)
    with pytest.raises(ValueError, match="regression_gate"):
        preset("tiny", regression_gate=threshold)
    with pytest.raises(ValueError, match="refuses nothing"):
        regressions(PERFECT, COLLAPSED, threshold)


def test_a_missing_or_nan_accuracy_counts_as_zero() -> None:
    assert len(regressions(PERFECT, {"mcts_accuracy": float("nan")}, 0.5)) == 2
    assert regressions({"mcts_accuracy": float("nan")}, {}, 0.0) == []  # nothing measured before: no drop


def _context(tmp_path: Path, config: RoundConfig) -> tuple[RoundContext, list[tuple[str, str]]]:
    store = ModelStore(tmp_path)
    for kind in ("policy", "ppm"):
        for round_number in (0, 1):  # v1: the bootstrap's, current; v2: the round's candidate
            store.publish(
                kind,
                lambda d: (d / "config.json").write_text("{}"),
                Lineage(round=round_number, source="test"),
                make_current=round_number == 0,
            )
    published: list[tuple[str, str]] = []
    context = RoundContext(
        store=store,
        rounds=Rounds(store),
        config=config,
        dispatcher=None,  # type: ignore[arg-type]
        progress=lambda stage, done, total: None,
        on_publish=lambda policy, ppm: published.append((policy, ppm)),
    )
    context.rounds.save(RoundState(round=0, state="succeeded", metrics=dict(PERFECT)))
    return context, published


def test_a_tiny_round_that_collapsed_is_not_published(tmp_path: Path) -> None:
    context, published = _context(tmp_path, preset("tiny"))
    state = RoundState(round=1, metrics=dict(COLLAPSED), policy_version="v2", ppm_version="v2")
    run_publish(context, state)
    assert state.state == "rejected"
    assert state.message.startswith("regressed past the gate of 0.5 (MCTS accuracy 0.000 < 1.000;")
    assert (context.store.current_name("policy"), context.store.current_name("ppm")) == ("v1", "v1")
    assert published == []


def test_a_tiny_round_within_the_gate_is_published(tmp_path: Path) -> None:
    context, published = _context(tmp_path, preset("tiny"))
    state = RoundState(round=1, metrics={"mcts_accuracy": 0.75, "greedy_accuracy": 0.5}, policy_version="v2")
    state.ppm_version = "v2"
    run_publish(context, state)
    assert state.state == "succeeded", state.message
    assert (context.store.current_name("policy"), context.store.current_name("ppm")) == ("v2", "v2")
    assert published == [("v2", "v2")]
