"""Training data: what the policy learns to write, and the PPM's corrupted steps."""

from __future__ import annotations

import random
from pathlib import Path

from transformers import AutoTokenizer

from services.common.store import ModelStore
from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.trainer.corrupt import KINDS, change_operator, corrupt_step, miscopy
from services.trainer.data import Trajectory
from services.trainer.sft import IGNORE, encode_trajectory
from support.tiny_models import QUESTION, STEPS, publish_micro_models


def test_loss_covers_model_written_steps_only(tmp_path: Path) -> None:
    policy, _ = publish_micro_models(ModelStore(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(policy.path)
    example = encode_trajectory(PromptRenderer(tokenizer), Trajectory(QUESTION, STEPS), 10_000)
    learned = tokenizer.decode(
        [i for i, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE]
    )
    assert QUESTION not in learned  # the prompt is context, not a target
    assert "<output>" not in learned  # stdout comes from the sandbox, never from the model
    assert "apples = 3 + 5" in learned and "\\boxed{8}" in learned
    assert tokenizer.decode(example["input_ids"]) == stepfmt.render_prompt(QUESTION, STEPS)


def test_corrupted_steps_stay_valid_python_and_differ() -> None:
    rng = random.Random(0)
    earlier = [stepfmt.render_step("price", "price = 12"), stepfmt.render_step("count", "count = 3")]
    step = stepfmt.render_step("total cost", "total = price * count")
    seen = set()
    for _ in range(30):
        wrong = corrupt_step(step, earlier, rng)
        assert wrong is not None and wrong.text != step
        assert wrong.text.startswith("# total cost\n") and wrong.text.endswith(stepfmt.END_OF_STEP)
        compile(stepfmt.program_of([wrong.text]), "<corrupted>", "exec")
        seen.add(wrong.kind)
    assert seen == {"operator", "variable"}  # no number in the code, no question, no next step


def test_answer_steps_get_a_wrong_number() -> None:
    wrong = corrupt_step(stepfmt.render_answer("42"), [], random.Random(1))
    assert wrong is not None and wrong.kind == "answer"
    assert "\\boxed{42}" not in wrong.text and wrong.text.startswith(stepfmt.ANSWER_START)


def test_steps_without_anything_to_change_are_skipped() -> None:
    assert corrupt_step(stepfmt.render_step("show it", "print(x)"), [], random.Random(0)) is None
    assert corrupt_step(stepfmt.render_output("5"), [], random.Random(0)) is None
    assert change_operator("x = -1", random.Random(0)) is None


def test_a_reassigned_variable_is_not_swapped_with_itself() -> None:
    earlier = [stepfmt.render_step("start", "rolls = 8 + 1"), stepfmt.render_step("sell", "rolls = rolls - 2")]
    step = stepfmt.render_step("sell more", "rolls = rolls - 3")
    for seed in range(20):
        wrong = corrupt_step(step, earlier, random.Random(seed))
        assert wrong is not None and wrong.text != step  # a number or the operator changed instead


def test_miscopied_numbers_look_like_a_small_models_slips() -> None:
    slips = {miscopy(105, random.Random(seed)) for seed in range(200)}
    assert 105 not in slips
    assert {10, 15, 5} & slips  # a digit dropped ("05" reads as 5)
    assert {1105, 1005, 1055} & slips  # a digit doubled
    assert {15, 150} & slips  # two digits swapped
    assert {103, 104, 106, 107, 115} & slips  # off by a little
    assert miscopy(7, random.Random(0)) != 7 and miscopy(11, random.Random(0)) != 11


def test_every_kind_appears_and_stays_valid_python() -> None:
    question = "Ben has 105 mangoes. Fiona has 34 umbrellas. He gets 25 more mangoes."
    earlier = [stepfmt.render_step("105 mangoes", "mangoes = 105")]
    step = stepfmt.render_step("25 more mangoes", "mangoes = mangoes + 25")
    following = stepfmt.render_step("print the answer", "print(mangoes)", last=True)
    kinds: dict[str, set[str]] = {}
    for seed in range(200):
        wrong = corrupt_step(step, earlier, random.Random(seed), question=question, next_step=following)
        assert wrong is not None and wrong.text != step
        compile(stepfmt.program_of([*earlier, wrong.text]), "<corrupted>", "exec")
        kinds.setdefault(wrong.kind, set()).add(wrong.text)
    assert set(kinds) == set(KINDS) - {"variable"}  # one earlier name: nothing to swap it with
    assert kinds["skip"] == {following}
    assert {t.split("\n")[1] for t in kinds["question"]} == {"mangoes = mangoes + 105", "mangoes = mangoes + 34"}
    # the comment follows a changed number some of the time, and some of the time it keeps the right one
    comments = {t.split("\n")[0] for t in kinds["miscopy"] | kinds["question"]}
    assert "# 25 more mangoes" in comments and len(comments) > 1


def test_training_files_read_the_curriculums_rows_and_refuse_a_bad_row_by_number(tmp_path: Path) -> None:
    import json

    import pytest

    from services.common.errors import InvalidInput, NotFound
    from services.trainer.data import StepPair, read_pairs, read_trajectories

    sft = tmp_path / "sft.jsonl"
    # `thinkmesh curriculum sample` prints the solution as a list of steps.
    sft.write_text(json.dumps({"question": QUESTION, "solution": list(STEPS), "answer": "8"}) + "\n\n")
    assert read_trajectories(sft) == [Trajectory(QUESTION, STEPS)]
    pair = StepPair(QUESTION, STEPS[:1], STEPS[1], STEPS[1].replace("apples", "pears"))
    pairs = tmp_path / "pairs.jsonl"
    row = {"question": pair.question, "prefix": list(pair.prefix), "chosen": pair.chosen, "rejected": pair.rejected}
    pairs.write_text(json.dumps(row) + "\n" + json.dumps({**row, "rejected": row["chosen"]}) + "\n")
    with pytest.raises(InvalidInput, match=r"pair file .*, line 2: .*chosen differs from rejected"):
        read_pairs(pairs)
    pairs.write_text(json.dumps(row) + "\n{oops\n")
    with pytest.raises(InvalidInput, match="line 2 is not JSON"):
        read_pairs(pairs)
    pairs.write_text(json.dumps(row) + "\n")
    assert read_pairs(pairs) == [pair]
    with pytest.raises(InvalidInput, match="line 1: a pair needs question, prefix, chosen, rejected"):
        read_pairs(sft)
    with pytest.raises(NotFound):
        read_pairs(tmp_path / "missing.jsonl")
