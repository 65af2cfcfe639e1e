"""The user's path: their Hugging Face checkpoint (chat-templated) imported as policy and PPM, their problems
(16 of GSM8K's training set, in GSM8K's own format) as the pool, round 1 searched by a teacher PolicyService
through the real services and a Celery worker, evaluated on 8 problems of MATH500. The machinery is asserted, not
the accuracy: the teacher knows the answers, the model served and trained is the user's.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from services.cli.main import main
from services.common.store import ModelStore
from services.math import stepfmt
from services.math.datasets import data_dir, read_problem_file
from services.math.prompting import PromptRenderer
from services.search.eval.compare import read_results
from services.trainer.config import preset
from services.trainer.rounds import RoundRunner
from support.processes import THINKMESH
from support.search_tier import search_tier
from support.tiny_models import write_chat_checkpoint

pytestmark = pytest.mark.timeout(900)


def _teacher_solution(answer: str) -> list[str]:
    """A program that prints the reference answer: enough for the search to find right and wrong answers."""
    return [
        stepfmt.render_step("the final number", f"answer = {answer}\nprint(answer)", last=True),
        stepfmt.render_output(answer),
        stepfmt.render_answer(answer),
    ]


def test_a_round_on_the_users_model_and_problems(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    checkpoint = write_chat_checkpoint(tmp_path / "user-model")
    for kind in ("policy", "ppm"):
        assert main(["models", "import", str(checkpoint), "--kind", kind, "--store", str(store.root)]) == 0
    pool_file = store.root / "pools" / "gsm8k16.jsonl"
    pool_file.parent.mkdir(parents=True)
    rows = (data_dir() / "gsm8k" / "train.jsonl").read_text().splitlines()[:16]
    pool_file.write_text("\n".join(rows) + "\n")  # GSM8K's format as it is: the answer after '####'
    problems = read_problem_file(pool_file)
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps({p.question: _teacher_solution(p.answer) for p in problems}))

    # SFT reads at most the median trajectory's length: the longer half is left out and counted, not cut.
    renderer = PromptRenderer(AutoTokenizer.from_pretrained(checkpoint), "chat")
    lengths = sorted(len(renderer.ids(p.question, _teacher_solution(p.answer))) for p in problems)
    base = preset("tiny", seed=3)
    config = replace(
        base,
        pool_file=str(pool_file),
        pool_size=16,
        eval_dataset="math500",
        eval_size=8,
        sft=replace(base.sft, max_length=lengths[len(lengths) // 2]),
    )

    with search_tier(
        tmp_path,
        store.root,
        [THINKMESH, "serve", "policy", "--port", "0"],  # the user's model: the workers' own policy
        {"THINKMESH_TEST_TEACHER_FILE": str(teacher)},
        extra={"teacher": [sys.executable, "-m", "support.teacher_policy"]},
    ) as tier:
        # Round 1's tasks name the teacher's PolicyService instead.
        config = replace(config, teacher_target=tier.addresses["teacher"])
        state = RoundRunner(store, config, tier.dispatcher).run()

    assert state.state == "succeeded", state.message
    assert state.finished == ["search", "extract", "sft", "ppm", "evaluate", "publish"]
    round_dir = store.root / "rounds" / "0001"
    assert len(list((round_dir / "trees").glob("*.json"))) == 16  # GSM8K ids made into result keys
    assert state.metrics["pool_solved"] > 0.5 and state.metrics["ppm_pairs"] > 0

    # SFT: the searched trajectories of the user's problems, no curriculum replay; the long ones counted.
    sft_rows = [json.loads(line) for line in (round_dir / "sft.jsonl").read_text().splitlines()]
    questions = {p.question for p in problems}
    assert sft_rows and {row["question"] for row in sft_rows} <= questions
    long = [r for r in sft_rows if len(renderer.ids(r["question"], r["steps"])) > config.sft.max_length]
    trained = [r for r in sft_rows if r not in long]
    assert long and trained  # both kinds, so the count below means something
    assert state.metrics["sft_dropped_long"] == len(long) * config.sft_weight
    assert "ppm_dropped_long" in state.metrics
    policy = store.get("policy", state.policy_version)
    assert f"pool {pool_file}" in policy.lineage.data and ", 0 teacher" in policy.lineage.data
    assert "searched by the teacher" in policy.lineage.data
    stored = json.loads(next((round_dir / "trees").glob("*.json")).read_text())
    assert stored["policy_version"] == "teacher"  # the teacher generated, not the worker's own policy
    assert policy.prompt_format == store.get("ppm", state.ppm_version).prompt_format == "chat"  # inherited
    assert "SFT dropped (long)" in (store.root / "rounds" / "report.md").read_text()

    # Evaluated on MATH500's first 8 problems, round 0 (the imported models) and round 1 alike.
    for number in ("0000", "0001"):
        results = read_results([store.root / "rounds" / number / "eval" / "mcts.jsonl"])
        assert len(results) == 8 and all(key.startswith("test/") for key in results)
    assert "frontier_level" not in state.metrics  # a curriculum measure, not taken on the user's data
    assert any(key.startswith("greedy_L") for key in state.metrics["per_level"])  # MATH's levels
