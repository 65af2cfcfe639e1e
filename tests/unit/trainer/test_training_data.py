"""Training data: what the policy learns to write, and the PPM's corrupted steps."""

from __future__ import annotations

import random
from pathlib import Path

from transformers import AutoTokenizer

from services.common import stepfmt
from services.common.store import ModelStore
from services.trainer.corrupt import change_operator, corrupt_step
from services.trainer.sft import IGNORE, Trajectory, encode_trajectory
from support.tiny_models import QUESTION, STEPS, publish_micro_models


def test_loss_covers_model_written_steps_only(tmp_path: Path) -> None:
    policy, _ = publish_micro_models(ModelStore(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(policy.path)
    example = encode_trajectory(tokenizer, Trajectory(QUESTION, STEPS), 10_000)
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
        assert wrong is not None and wrong != step
        assert wrong.startswith("# total cost\n") and wrong.endswith(stepfmt.END_OF_STEP)
        compile(stepfmt.program_of([wrong]), "<corrupted>", "exec")
        seen.add(wrong)
    assert len(seen) >= 3  # numbers, operators and variables all get changed


def test_answer_steps_get_a_wrong_number() -> None:
    wrong = corrupt_step(stepfmt.render_answer("42"), [], random.Random(1))
    assert wrong is not None and "\\boxed{42}" not in wrong and wrong.startswith(stepfmt.ANSWER_START)


def test_steps_without_anything_to_change_are_skipped() -> None:
    assert corrupt_step(stepfmt.render_step("show it", "print(x)"), [], random.Random(0)) is None
    assert corrupt_step(stepfmt.render_output("5"), [], random.Random(0)) is None
    assert change_operator("x = -1", random.Random(0)) is None


def test_a_reassigned_variable_is_not_swapped_with_itself() -> None:
    earlier = [stepfmt.render_step("start", "rolls = 8 + 1"), stepfmt.render_step("sell", "rolls = rolls - 2")]
    step = stepfmt.render_step("sell more", "rolls = rolls - 3")
    for seed in range(20):
        wrong = corrupt_step(step, earlier, random.Random(seed))
        assert wrong is not None and wrong != step  # a number or the operator changed instead
