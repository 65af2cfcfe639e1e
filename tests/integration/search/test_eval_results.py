"""`thinkmesh eval --results` with the embedded components, and `thinkmesh compare` on what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main
from services.common.store import ModelStore
from support.tiny_models import publish_micro_models

pytestmark = pytest.mark.timeout(300)


def test_eval_writes_one_row_per_problem_that_compare_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    publish_micro_models(ModelStore(store))
    common = ["eval", "--dataset", "curriculum", "--level", "1", "--n", "3", "--store", str(store), "--json"]
    greedy, sampled = tmp_path / "greedy.jsonl", tmp_path / "maj.jsonl"
    assert main([*common, "--method", "greedy", "--results", str(greedy)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    rows = [json.loads(line) for line in greedy.read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"curriculum-L1-s12345-{i}" for i in range(3)]
    assert sum(row["correct"] for row in rows) / 3 == summary["accuracy"]
    assert all(row["kind"] and row["reference"] and row["rollouts"] == 1 for row in rows)

    assert main([*common, "--method", "maj", "--rollouts", "2", "--results", str(sampled)]) == 0
    capsys.readouterr()
    assert main(["compare", str(greedy), str(sampled), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3 and report["accuracy_a"] == summary["accuracy"]
