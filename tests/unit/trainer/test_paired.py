"""A round's evaluation against an earlier one, problem by problem, and how the round report shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.trainer.rounds.paired import paired, summary
from services.trainer.rounds.report import markdown_table, per_level_table
from services.trainer.rounds.state import RoundState


def _write(directory: Path, method: str, verdicts: dict[str, bool]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"id": problem, "correct": ok}) for problem, ok in verdicts.items()]
    (directory / f"{method}.jsonl").write_text("\n".join(rows) + "\n")


def test_two_rounds_are_compared_per_level_and_pooled_on_the_problems_both_saw(tmp_path: Path) -> None:
    before = {f"curriculum-L3-s1-{i}": i < 10 for i in range(40)} | {f"curriculum-L4-s1-{i}": False for i in range(20)}
    # Round after: level 3 gains problems 10–21 and loses 0–1; level 4 gains one; a problem only it saw is left out.
    after = {k: v for k, v in before.items()}
    after.update({f"curriculum-L3-s1-{i}": True for i in range(10, 22)})
    after.update({"curriculum-L3-s1-0": False, "curriculum-L3-s1-1": False, "curriculum-L4-s1-3": True})
    after["curriculum-L5-s1-0"] = True
    _write(tmp_path / "0", "greedy", before)
    _write(tmp_path / "1", "greedy", after)

    result = paired(tmp_path / "0", tmp_path / "1")

    assert set(result) == {"greedy"}  # no mcts.jsonl in either: not compared
    level3, level4, pooled = (result["greedy"][k] for k in ("L3", "L4", "all"))
    assert (level3["n"], level3["gained"], level3["lost"]) == (40, 12, 2)
    assert (level3["before"], level3["after"]) == (0.25, 0.5)
    assert level3["p"] == pytest.approx(0.0129, abs=1e-4)  # 2·P(X ≤ 2), X ~ Binomial(14, 1/2)
    assert (level4["gained"], level4["lost"], level4["p"]) == (1, 0, 1.0)
    assert (pooled["n"], pooled["gained"], pooled["lost"]) == (60, 13, 2)
    assert summary(result, "greedy", "L3") == "+12 −2 (p 0.013)"
    assert summary(result, "mcts") == "–"


def test_the_report_shows_each_round_against_the_one_before_and_a_table_by_level() -> None:
    comparison = {"greedy": {"all": {"gained": 5, "lost": 1, "p": 0.22}, "L3": {"gained": 4, "lost": 1, "p": 0.38}}}
    states = [
        RoundState(round=0, metrics={"greedy_accuracy": 0.2, "per_level": {"greedy_L3": 0.2, "mcts_L3": 0.21}}),
        RoundState(
            round=1,
            metrics={
                "greedy_accuracy": 0.22,
                "per_level": {"greedy_L3": 0.25, "mcts_L3": 0.3},
                "paired_previous": comparison,
            },
        ),
    ]
    header, _, first, second = markdown_table(states).splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    cells = [cell.strip() for cell in second.strip("|").split("|")]
    assert cells[names.index("greedy vs previous")] == "+5 −1 (p 0.22)"
    assert cells[names.index("MCTS vs previous")] == "–"
    assert [cell.strip() for cell in first.strip("|").split("|")][names.index("greedy vs previous")] == "–"
    by_level = per_level_table(states).strip().splitlines()
    assert by_level[0] == "| round | level | greedy | greedy vs previous | MCTS | MCTS vs previous |"
    assert by_level[3] == "| 1 | L3 | 0.250 | +4 −1 (p 0.38) | 0.300 | – |"
    assert per_level_table([RoundState(round=0, metrics={"greedy_accuracy": 0.1})]) == ""
