"""A round on the user's own problems: problem files in the formats users have, drawn per round, and the
curriculum exported to a file giving exactly the built-in pool's tasks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from services.cli.main import main
from services.common.errors import InvalidInput, NotFound
from services.common.store import ModelStore
from services.math.datasets import data_dir, read_problem_file
from services.search.results import result_key
from services.trainer.config import preset
from services.trainer.core import TrainerCore
from services.trainer.rounds.rules import drawn, pool, sft_mix


def test_a_curriculum_exported_to_a_file_gives_the_built_in_pools_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = preset("tiny", seed=5)
    level = config.pool_levels[0]
    # Round 1 draws its curriculum problems with seed + 7001, as `thinkmesh curriculum sample` can.
    assert main(["curriculum", "sample", "--level", str(level), "--n", "6", "--seed", "7006"]) == 0
    exported = tmp_path / "curriculum.jsonl"
    exported.write_text(capsys.readouterr().out)
    built_in = pool(config, 1, config.pool_levels)
    from_file = pool(replace(config, pool_file=str(exported)), 1, config.pool_levels)
    assert from_file == built_in  # every field: question, reference, id, budget, q_mode, seed


def test_the_files_of_the_shared_data_are_read_as_they_are() -> None:
    gsm8k = read_problem_file(data_dir() / "gsm8k" / "train.jsonl")
    assert gsm8k[0].answer == "72" and gsm8k[0].id == "train/0" and gsm8k[0].question.startswith("Natalia")
    algebra = read_problem_file(data_dir() / "math_full" / "test_algebra.jsonl")
    assert algebra[0].id.startswith("test/algebra/") and algebra[0].level is not None and algebra[0].answer
    assert result_key(algebra[0].id) != algebra[0].id and result_key(algebra[0].id).startswith("test-algebra-")


def test_a_users_file_may_name_ids_levels_sources_or_be_a_json_list(tmp_path: Path) -> None:
    rows = [
        {"id": "q1", "question": "What is 2+2?", "answer": 4, "level": 1, "source": "inhouse"},
        {"problem": "Compute $1+1$.", "solution": "We get $\\boxed{2}$."},
    ]
    lines = tmp_path / "mine.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    listed = tmp_path / "mine.json"
    listed.write_text(json.dumps(rows))
    for path in (lines, listed):
        first, second = read_problem_file(path)
        assert (first.id, first.answer, first.level, first.source) == ("q1", "4", 1, "inhouse")
        assert (second.id, second.answer, second.source) == (f"{path.stem}/1", "2", path.stem)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q"}\n', "row 1 has no answer"),
        ('{"answer": "1"}\n', "row 1 has no question"),
        ('{"question": "q", "answer": "1"}\nnot json\n', "line 2 is not JSON"),
        ('{"id": "a", "question": "q", "answer": "1"}\n{"id": "a", "question": "r", "answer": "2"}\n', "appears twice"),
        ("\n", "holds no problems"),
    ],
)
def test_a_bad_file_is_refused_with_the_row_that_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        read_problem_file(path)
    with pytest.raises(NotFound):
        read_problem_file(tmp_path / "missing.jsonl")


def test_each_round_draws_its_own_problems_in_file_order_and_replays_no_curriculum(tmp_path: Path) -> None:
    problems = list(range(100))
    first, again, second = drawn(problems, 10, 1), drawn(problems, 10, 1), drawn(problems, 10, 2)
    assert first == again == sorted(first) and first != second
    assert drawn(problems[:5], 10, 1) == problems[:5]  # a small file: all of it
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}?", "answer": i}) + "\n" for i in range(30)))
    config = preset("tiny", pool_file=str(path), pool_size=8)
    tasks = pool(config, 1, ())
    assert len(tasks) == 8 and len({t.problem_id for t in tasks}) == 8
    assert {t.problem_id for t in tasks} != {t.problem_id for t in pool(config, 2, ())}
    _, replayed, _ = sft_mix(config, 1, [])
    assert replayed == 0  # the user's problems: no synthetic replay unless asked
    assert sft_mix(replace(config, curriculum_replay=True), 1, [])[1] == config.sft_replay


def test_start_round_takes_files_inside_the_store_only(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    (store.root / "pools").mkdir(parents=True)
    (store.root / "pools" / "mine.jsonl").write_text(json.dumps({"question": "q?", "answer": "1"}) + "\n")
    (tmp_path / "outside.jsonl").write_text(json.dumps({"question": "q?", "answer": "1"}) + "\n")
    core = TrainerCore(store, preset("tiny"), lambda config: None)  # type: ignore[arg-type,return-value]
    assert core.in_store("pools/mine.jsonl", "pool_file") == str((store.root / "pools" / "mine.jsonl").resolve())
    for name in ("../outside.jsonl", str(tmp_path / "outside.jsonl"), "pools/missing.jsonl"):
        with pytest.raises(InvalidInput, match="pool_file"):
            core.in_store(name, "pool_file")
    assert core.eval_source("math500") == "math500"


def test_round_one_from_a_teacher_names_it_in_its_tasks_and_is_terminal_guided() -> None:
    config = preset("rstar-r3", teacher_target="teacher:50052", pool_size=3, pool_levels=(1,))
    first, second = pool(config, 1, (1,)), pool(config, 2, (1,))
    assert {(t.policy_target, t.q_mode) for t in first} == {("teacher:50052", "terminal")}
    assert {(t.policy_target, t.q_mode) for t in second} == {("", "ppm")}


def test_supplied_trajectories_are_read_in_the_step_format(tmp_path: Path) -> None:
    from services.math import stepfmt
    from services.math.curriculum import generate
    from services.trainer.data import read_trajectories

    problems = generate(1, 2, seed=0)
    good = tmp_path / "sft.jsonl"
    rows = [{"question": problems[0].question, "steps": list(problems[0].solution)}]
    rows.append({"question": problems[1].question, "solution": stepfmt.render_solution(problems[1].solution)})
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = read_trajectories(good)
    assert [t.steps for t in read] == [tuple(p.solution) for p in problems]
    unfinished = tmp_path / "unfinished.jsonl"
    unfinished.write_text(json.dumps({"question": "q", "steps": list(problems[0].solution[:1])}) + "\n")
    with pytest.raises(InvalidInput, match="line 1: the last step is not the answer"):
        read_trajectories(unfinished)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"question": "q", "steps": ["x = 1"]}) + "\n")
    with pytest.raises(InvalidInput, match="not in the step format"):
        read_trajectories(broken)


def test_the_number_rule_judges_the_curriculum_only(tmp_path: Path) -> None:
    # Its constants are the curriculum's: a user's problem "Natalia sold 48 clips..." is answered with numbers it
    # never states (12 months, 60 minutes), so a pool file turns the rule off, as the rstar presets do.
    config = preset("tiny")
    rule = config.numbers
    assert rule is not None and rule.foreign("Half of 10?", ["x = 10 / 3\n<end_of_step>"]) == ["3"]
    assert replace(config, pool_file=str(tmp_path / "mine.jsonl")).numbers is None
    assert preset("rstar-r2").numbers is None
