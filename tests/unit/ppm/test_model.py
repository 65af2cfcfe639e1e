"""The PPM's model: value head in the same safetensors, one call loads it, initialised from a policy."""

from __future__ import annotations

from pathlib import Path

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
