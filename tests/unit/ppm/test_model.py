"""The PPM's model: value head in the same safetensors, one call loads it, initialised from a policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from services.common.store import ModelStore
from services.math import stepfmt
from services.math.prompting import PromptRenderer
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


def test_a_value_head_alone_initialised_from_a_policy_scores_near_zero(tmp_path: Path) -> None:
    policy, _ = publish_micro_models(ModelStore(tmp_path))
    model = ProcessRewardModel.from_pretrained(policy.path, likelihood=False)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    scores = model(ids, torch.ones_like(ids))
    assert scores.shape == (1, 5)
    assert scores.abs().max() < 0.05
    assert not hasattr(model, "lm_head")


def test_the_likelihood_term_is_the_policys_mean_logprob_of_the_counted_tokens(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy, _ = publish_micro_models(ModelStore(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(policy.path)
    model = ProcessRewardModel.from_pretrained(policy.path).eval()
    torch.nn.init.zeros_(model.value_head.weight)  # the score is then the likelihood term and the bias alone
    item = encode_item(PromptRenderer(tokenizer), ScoreItem(QUESTION, STEPS), 10_000)
    ids, counted = torch.tensor([item.ids]), torch.tensor([item.counted])
    with torch.no_grad():
        scores = model(ids, counted=counted)[0]
        logprobs = AutoModelForCausalLM.from_pretrained(policy.path)(ids).logits[0].log_softmax(-1)
    token_logprob = logprobs[:-1].gather(1, ids[0, 1:, None]).squeeze(1)  # [j - 1]: token j given those before
    for position in item.positions:
        on_path = counted[0, 1 : position + 1]
        mean = token_logprob[:position][on_path].mean()
        expected = torch.tanh(model.likelihood_weight * mean + model.value_head.bias)
        assert scores[position].item() == pytest.approx(expected.item(), abs=1e-4)
    # the prompt and the <output> block do not count; the steps the policy wrote do
    prompt = len(tokenizer.encode(stepfmt.render_prompt(QUESTION, []), add_special_tokens=False))
    assert not any(item.counted[:prompt]) and all(item.counted[prompt : item.positions[0] + 1])
    output_end = item.positions[2]
    assert not item.counted[output_end] and item.counted[item.positions[3]]
    with pytest.raises(ValueError, match="counted"):
        model(ids)


def test_a_saved_likelihood_ppm_reloads_as_one_and_older_ppms_as_value_heads(tmp_path: Path) -> None:
    import json

    policy, _ = publish_micro_models(ModelStore(tmp_path))
    ProcessRewardModel.from_pretrained(policy.path).save_pretrained(tmp_path / "new")
    assert ProcessRewardModel.from_pretrained(tmp_path / "new").likelihood
    ProcessRewardModel.from_pretrained(policy.path, likelihood=False).save_pretrained(tmp_path / "old")
    description = tmp_path / "old" / "ppm.json"
    description.write_text(json.dumps({"head": "linear+tanh"}))  # what PPMs saved before the likelihood term say
    assert not ProcessRewardModel.from_pretrained(tmp_path / "old").likelihood


def test_positions_are_each_steps_end_marker(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    policy, _ = publish_micro_models(ModelStore(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(policy.path)
    item = encode_item(PromptRenderer(tokenizer), ScoreItem(QUESTION, STEPS), 10_000)
    assert len(item.positions) == len(STEPS)
    last_tokens = [tokenizer.decode([item.ids[p]]) for p in item.positions]
    assert last_tokens == ["<end_of_step>", "<end_of_code>", "<end_of_output>", "<end_of_answer>"]


def test_scorer_packs_a_nodes_children_into_one_row_and_scores_each_as_alone(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from services.math import stepfmt
    from services.ppm.scorer import HFScorer

    _, ppm_version = publish_micro_models(ModelStore(tmp_path))
    scorer = HFScorer(ppm_version.path, ppm_version.version, device="cpu")
    scorer._autocast = False  # exact comparison in fp32
    torch.nn.init.normal_(scorer.model.value_head.weight, std=0.5)  # scores far from 0, so a difference would show
    with torch.no_grad():  # an untrained micro policy's tokens are unlikely: keep the term out of saturation
        scorer.model.likelihood_weight.fill_(0.1)
        scorer.model.value_head.bias.zero_()
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
        encoded = encode_item(PromptRenderer(tokenizer), item, 10_000)
        with torch.no_grad():
            alone = scorer.model(torch.tensor([encoded.ids]), counted=torch.tensor([encoded.counted]))
        alone = alone[0, encoded.positions].tolist()
        assert scores == pytest.approx(alone, abs=1e-5)
    assert len({round(scores[-1], 6) for scores in packed[:3]}) == 3
