"""The PPM's model: value head in the same safetensors, one call loads it, initialised from a policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from services.common.store import ModelStore
from services.ppm.model import WEIGHTS, ProcessRewardModel
from services.ppm.scorer import ScoreItem, encode_item
from support.tiny_models import QUESTION, STEPS, publish_micro_models


def test_saved_ppm_round_trips_with_its_head(tmp_path: Path) -> None:
    _, ppm_version = publish_micro_models(ModelStore(tmp_path))
    model = ProcessRewardModel.from_pretrained(ppm_version.path)
    with torch.no_grad():
        model.value_head.weight.fill_(0.05)
    model.save_pretrained(tmp_path / "saved")
    state = load_file(str(tmp_path / "saved" / WEIGHTS))
    assert "value_head.weight" in state and any(k.startswith("model.") for k in state)
    reloaded = ProcessRewardModel.from_pretrained(tmp_path / "saved")
    assert torch.equal(reloaded.value_head.weight, model.value_head.weight)


def test_initialised_from_a_policy_scores_near_zero(tmp_path: Path) -> None:
    policy, _ = publish_micro_models(ModelStore(tmp_path))
    model = ProcessRewardModel.from_pretrained(policy.path)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    scores = model(ids, torch.ones_like(ids))
    assert scores.shape == (1, 5)
    assert scores.abs().max() < 0.05


def test_positions_are_each_steps_end_marker(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    policy, _ = publish_micro_models(ModelStore(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(policy.path)
    ids, positions = encode_item(tokenizer, ScoreItem(QUESTION, STEPS), 10_000)
    assert len(positions) == len(STEPS)
    last_tokens = [tokenizer.decode([ids[p]]) for p in positions]
    assert last_tokens == ["<end_of_step>", "<end_of_code>", "<end_of_output>", "<end_of_answer>"]


def test_scorer_packs_a_nodes_children_into_one_row_and_scores_each_as_alone(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from services.common import stepfmt
    from services.ppm.scorer import HFScorer

    _, ppm_version = publish_micro_models(ModelStore(tmp_path))
    scorer = HFScorer(ppm_version.path, ppm_version.version, device="cpu")
    scorer._autocast = False  # exact comparison in fp32
    torch.nn.init.normal_(scorer.model.value_head.weight, std=0.5)  # scores far from 0, so a difference would show
    children = [stepfmt.render_step("apples after buying", f"apples = 3 {op} 5") for op in "+-*"]
    items = [
        *(ScoreItem(QUESTION, (STEPS[0], child)) for child in children),  # three children of one node: one row
        ScoreItem(QUESTION, STEPS),
        ScoreItem(QUESTION, STEPS[:1]),
    ]
    batch_rows: list[int] = []
    scorer.model.register_forward_hook(lambda _module, args, _output: batch_rows.append(args[0].shape[0]))
    packed = scorer._score_batch(items)
    assert batch_rows == [3]  # the children's row, and one row for each other item
    tokenizer = AutoTokenizer.from_pretrained(ppm_version.path)
    for item, scores in zip(items, packed, strict=True):
        ids, positions = encode_item(tokenizer, item, 10_000)
        with torch.no_grad():
            alone = scorer.model(torch.tensor([ids]))[0, positions].tolist()
        assert scores == pytest.approx(alone, abs=1e-5)
    assert len({round(scores[-1], 6) for scores in packed[:3]}) == 3
