"""The trainer's step pairs: one row holds a prefix and all of its candidate steps, and each step must score
exactly as it would in a row of its own (what the PPM service computes at inference)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from services.common.errors import InvalidInput
from services.common.store import ModelStore
from services.math import stepfmt
from services.math.prompting import PromptRenderer
from services.ppm.model import ProcessRewardModel
from services.ppm.scorer import ScoreItem, encode_item
from services.trainer.data import StepPair
from services.trainer.ppm_train import GroupCollator, encode_group, group_pairs, pair_scores
from services.trainer.sft import pad_id_of
from support.tiny_models import QUESTION, STEPS, publish_micro_models

MINUS = stepfmt.render_step("apples after buying", "apples = 3 - 5")
TIMES = stepfmt.render_step("apples after buying", "apples = 3 * 5")
PAIRS = [
    StepPair(QUESTION, (), STEPS[0], MINUS),
    StepPair(QUESTION, (STEPS[0],), STEPS[1], stepfmt.render_step("print the answer", "print(apples + 1)", last=True)),
    StepPair("Ann has 7 pens. She loses 2. How many are left?", (), "pens = 7 - 2\n<end_of_step>", "x\n<end_of_step>"),
    StepPair(QUESTION, (), STEPS[0], TIMES),  # same prefix as the first: joins its group
    StepPair(QUESTION, (), MINUS, TIMES),
    StepPair(QUESTION, (), STEPS[0], MINUS),  # a repeat counts once
]


def test_pairs_sharing_a_prefix_form_one_group_with_each_step_once() -> None:
    groups = group_pairs(PAIRS)
    assert [len(g.steps) for g in groups] == [3, 2, 2]
    assert groups[0].steps == (STEPS[0], MINUS, TIMES)
    assert groups[0].preferences == ((0, 1), (0, 2), (1, 2))


def alone(model: ProcessRewardModel, tokenizer: object, question: str, steps: tuple[str, ...]) -> float:
    item = encode_item(PromptRenderer(tokenizer), ScoreItem(question, steps), 10_000)
    with torch.no_grad():
        return float(model(torch.tensor([item.ids]), counted=torch.tensor([item.counted]))[0, item.positions[-1]])


def test_each_step_of_a_packed_group_scores_as_it_would_alone(tmp_path: Path) -> None:
    _, ppm = publish_micro_models(ModelStore(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(ppm.path)
    model = ProcessRewardModel.from_pretrained(ppm.path).eval()
    torch.nn.init.normal_(model.value_head.weight, std=0.5)  # scores far from 0, so a difference would show
    with torch.no_grad():  # an untrained micro policy's tokens are unlikely: keep the term out of saturation
        model.likelihood_weight.fill_(0.1)
        model.value_head.bias.zero_()
    groups = group_pairs(PAIRS)
    batch = GroupCollator(pad_id_of(tokenizer))([encode_group(PromptRenderer(tokenizer), g, 10_000) for g in groups])
    with torch.no_grad():
        better, worse = pair_scores(model, batch)

    def score(group_index: int, step: int) -> float:
        group = groups[group_index]
        return alone(model, tokenizer, group.question, (*group.prefix, group.steps[step]))

    expected = [(score(i, b), score(i, w)) for i, g in enumerate(groups) for b, w in g.preferences]
    assert len(expected) == len(better) == 5
    for index, (want_better, want_worse) in enumerate(expected):
        assert better[index].item() == pytest.approx(want_better, abs=1e-5)
        assert worse[index].item() == pytest.approx(want_worse, abs=1e-5)
    assert len({round(x, 6) for pair in expected for x in pair}) == 7  # seven distinct steps, seven distinct scores


def test_a_group_over_the_length_limit_or_with_an_empty_step_is_refused(tmp_path: Path) -> None:
    _, ppm = publish_micro_models(ModelStore(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(ppm.path)
    with pytest.raises(InvalidInput, match="at most 20"):
        encode_group(PromptRenderer(tokenizer), group_pairs(PAIRS[:1])[0], 20)
    with pytest.raises(InvalidInput, match="empty"):
        encode_group(PromptRenderer(tokenizer), group_pairs([StepPair(QUESTION, (), STEPS[0], "")])[0], 10_000)
