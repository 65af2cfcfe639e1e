"""The hf backend's own sampling loop: it must decode exactly what transformers' generate() would, only cheaper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from services.common.store import ModelStore
from services.policy.decoding import filter_logits, sample_candidates
from services.policy.engine import SamplingParams, StepPrompt
from services.policy.hf_engine import HFEngine, _Request
from support.tiny_models import QUESTION, STEPS, publish_micro_models


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy, _ = publish_micro_models(ModelStore(tmp_path_factory.mktemp("store")))
    return policy.path


@pytest.fixture(scope="module")
def engine(policy_dir: Path) -> HFEngine:
    engine = HFEngine(policy_dir, "v1", device="cpu")
    # Exact comparisons across batch shapes: fp32 throughout (bf16 autocast may flip a near-tie of the random model).
    engine._autocast = False
    return engine


def _left_padded(engine: HFEngine, prompts: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = engine.tokenizer.pad({"input_ids": [list(ids) for ids in prompts]}, padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def test_nucleus_keeps_the_smallest_set_above_top_p_and_always_the_best_token() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = filter_logits(logits, temperature=1.0, top_p=0.7)
    assert torch.isfinite(kept[0, :2]).all() and torch.isinf(kept[0, 2:]).all()
    assert torch.allclose(kept[0, :2], logits[0, :2])
    only_best = filter_logits(logits, temperature=0.5, top_p=0.01)
    assert torch.isfinite(only_best).tolist() == [[True, False, False, False]]
    assert torch.allclose(filter_logits(logits, 0.5, 1.0), logits / 0.5)


@pytest.fixture(scope="module")
def lively_model() -> Qwen2ForCausalLM:
    """Random weights large enough that greedy decoding wanders over the vocabulary (small ones repeat a token)."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        initializer_range=0.5,
    )
    return Qwen2ForCausalLM(config).eval()


def test_greedy_decoding_matches_generate_row_for_row(lively_model: Qwen2ForCausalLM) -> None:
    # Prompts of different lengths (left padding) and stop tokens common enough that rows end at different steps.
    lengths = (9, 4, 6)
    input_ids = torch.zeros((3, 9), dtype=torch.long)
    attention_mask = torch.zeros((3, 9), dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, 9 - length :] = torch.randint(10, 64, (length,), generator=torch.Generator().manual_seed(row))
        attention_mask[row, 9 - length :] = 1
    stop_ids = list(range(8))
    with torch.inference_mode():
        ours = sample_candidates(
            lively_model,
            input_ids,
            attention_mask,
            counts=[1, 1, 1],
            max_new_tokens=12,
            stop_ids=stop_ids,
            temperature=0,
        )
        reference = lively_model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=63,
            return_dict_in_generate=True,
            output_scores=True,
        )
        scores = lively_model.compute_transition_scores(reference.sequences, reference.scores, normalize_logits=True)
    generated_lengths = set()
    for row, sampled in enumerate(ours):
        expected = reference.sequences[row, input_ids.shape[1] :].tolist()
        stop = next((i for i, token in enumerate(expected) if token in stop_ids), len(expected) - 1)
        assert sampled.token_ids == expected[: stop + 1]
        assert sampled.logprob == pytest.approx(float(scores[row, : stop + 1].sum()), abs=1e-4)
        generated_lengths.add(len(sampled.token_ids))
    assert len(generated_lengths) > 1, "the rows should stop at different steps for this test to mean anything"


def test_candidates_follow_counts_and_a_seed_reproduces_them(engine: HFEngine) -> None:
    prompts = [engine.render(StepPrompt(QUESTION, STEPS[:k])) for k in (0, 2)]
    input_ids, attention_mask = _left_padded(engine, prompts)

    def sample(seed: int) -> list[list[int]]:
        with torch.inference_mode():
            rows = sample_candidates(
                engine.model,
                input_ids,
                attention_mask,
                counts=[3, 1],
                max_new_tokens=10,
                stop_ids=[0],
                temperature=1.0,
                generator=torch.Generator().manual_seed(seed),
            )
        return [row.token_ids for row in rows]

    first, again, other = sample(1), sample(1), sample(2)
    assert len(first) == 4 and first == again and first != other
    assert len(set(map(tuple, first[:3]))) > 1, "a prompt's candidates are drawn independently"


async def test_engine_serves_merged_requests_with_repeated_prompts(engine: HFEngine) -> None:
    # Two requests for the same prompt land in one batch (encoded once); each gets its own n candidates.
    greedy = SamplingParams(n=2, temperature=0, max_new_tokens=8)
    prompt = StepPrompt(QUESTION, STEPS[:1])
    merged = engine._generate_group([_Request([prompt, StepPrompt(QUESTION)], greedy), _Request([prompt], greedy)])
    assert [len(per_prompt) for request in merged for per_prompt in request] == [2, 2, 2]
    alone = await engine.generate([prompt], SamplingParams(n=1, temperature=0, max_new_tokens=8))
    expected = alone[0][0]
    for step in (merged[0][0][0], merged[0][0][1], merged[1][0][0], merged[1][0][1]):
        assert (step.text, step.end, step.num_tokens) == (expected.text, expected.end, expected.num_tokens)
        assert step.logprob == pytest.approx(expected.logprob, abs=1e-4)
    assert expected.num_tokens > 0 and expected.logprob < 0


def test_the_generate_fallback_serves_the_same_greedy_steps(policy_dir: Path, engine: HFEngine) -> None:
    # Tokenizers whose markers span several tokens go through generate() with stop strings instead.
    fallback = HFEngine(policy_dir, "v1", device="cpu")
    fallback._autocast = False
    fallback._stop_ids = None
    request = _Request(
        [StepPrompt(QUESTION), StepPrompt(QUESTION, STEPS[:1])], SamplingParams(n=2, temperature=0, max_new_tokens=8)
    )
    [ours], [theirs] = engine._generate_group([request]), fallback._generate_group([request])
    assert [len(candidates) for candidates in theirs] == [2, 2]
    for mine, other in zip((s for c in ours for s in c), (s for c in theirs for s in c), strict=True):
        assert (mine.text, mine.end, mine.num_tokens) == (other.text, other.end, other.num_tokens)
        assert mine.logprob == pytest.approx(other.logprob, abs=1e-4)


def test_a_cuda_device_takes_cudnn_out_of_the_attention_backends() -> None:
    # cuDNN builds an attention plan per unseen shape (~35 ms on an H200); decoding never repeats a shape.
    from services.common.devices import pick_device

    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        assert pick_device("cpu") == "cpu"
        assert torch.backends.cuda.cudnn_sdp_enabled()
        assert pick_device("cuda:0") == "cuda:0"
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
