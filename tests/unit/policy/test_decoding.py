"""The hf backend's own sampling loop: it must decode exactly what transformers' generate() would, only cheaper."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from services.common.store import ModelStore
from services.policy.decoding import filter_logits, prefill, prefill_cached, sample_candidates, sample_from
from services.policy.engine import SamplingParams, StepPrompt
from services.policy.hf_engine import HFEngine, _Request
from services.policy.lean import LeanDecoder
from services.policy.prefix_cache import PrefixCache
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


def _ragged_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts of 9, 4 and 6 random tokens."""
    input_ids = torch.zeros((3, 9), dtype=torch.long)
    attention_mask = torch.zeros((3, 9), dtype=torch.long)
    for row, length in enumerate((9, 4, 6)):
        input_ids[row, 9 - length :] = torch.randint(10, 64, (length,), generator=torch.Generator().manual_seed(row))
        attention_mask[row, 9 - length :] = 1
    return input_ids, attention_mask


def test_greedy_decoding_matches_generate_row_for_row(lively_model: Qwen2ForCausalLM) -> None:
    # Prompts of different lengths (left padding) and stop tokens common enough that rows end at different steps.
    input_ids, attention_mask = _ragged_prompts()
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


def test_prompts_encoded_from_cached_prefixes_decode_what_whole_prompts_do(lively_model: Qwen2ForCausalLM) -> None:
    boundary = 5  # the token that ends a step: cached prompts are looked up at the positions after it
    parents = [(10, 11, 12, 13, boundary), (20, 21, boundary), (30, 31, 32, boundary, 33, 34, boundary)]
    children = [
        (*parents[0], 40, 41, 42, boundary),  # a parent's prompt plus a step
        (*parents[2], 43, boundary),
        (*parents[2], 44, 45, 46, 47, 48, boundary),  # two children of one parent, of different lengths
        (50, 51, 52, boundary),  # no cached prefix at all
        parents[1],  # a prompt asked again: encoded again (a cached prompt serves the longer ones only)
    ]
    cache = PrefixCache(1 << 20, boundary=boundary)

    def whole(prompts: list[tuple[int, ...]]) -> list[tuple[list[int], float]]:
        width = max(map(len, prompts))
        input_ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :], mask[row, width - len(ids) :] = torch.tensor(ids), 1
        with torch.inference_mode():
            rows = sample_candidates(
                lively_model, input_ids, mask, counts=[2] * len(prompts), max_new_tokens=8, stop_ids=[0], temperature=0
            )
        return [(r.token_ids, r.logprob) for r in rows]

    def cached(prompts: list[tuple[int, ...]]) -> list[tuple[list[int], float]]:
        with torch.inference_mode():
            rows = sample_from(
                lively_model,
                lambda: prefill_cached(lively_model, prompts, cache, pad_id=63, device=torch.device("cpu")),
                counts=[2] * len(prompts),
                max_new_tokens=8,
                stop_ids=[0],
                temperature=0,
                device=torch.device("cpu"),
            )
        return [(r.token_ids, r.logprob) for r in rows]

    for prompts in (parents, children):
        expected, got = whole(list(prompts)), cached(list(prompts))
        assert [ids for ids, _ in got] == [ids for ids, _ in expected]
        assert [lp for _, lp in got] == pytest.approx([lp for _, lp in expected], abs=1e-4)
    # The children reused their parents' 5 + 7 + 7 tokens; nothing else.
    assert cache.stats.tokens_reused == 5 + 7 + 7
    assert cache.stats.hits == 3 and len(cache) == len(parents) + 4


def test_the_prefix_cache_stays_within_its_bytes_dropping_the_least_recently_used() -> None:
    def layers(tokens: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        return ((torch.zeros(1, tokens, 4), torch.zeros(1, tokens, 4)),)  # 32 bytes a token

    cache = PrefixCache(max_bytes=32 * 9, boundary=None)
    cache.put((1, 2, 3), layers(3))
    cache.put((4, 5, 6), layers(3))
    assert cache.longest((1, 2, 3, 9)) == (3, cache._entries[(1, 2, 3)])  # (1, 2, 3) is now the most recent
    cache.put((7, 8, 9, 10), layers(4))  # 10 tokens in all, over 9: the oldest, (4, 5, 6), goes
    assert cache.longest((4, 5, 6, 9))[0] == 0 and cache.longest((7, 8, 9, 10, 11))[0] == 4
    assert cache.bytes == 32 * 7
    cache.put((0,) * 11, layers(11))  # larger than the whole cache: not kept
    assert cache.bytes == 32 * 7


def test_lean_steps_decode_what_the_models_forward_pass_does(lively_model: Qwen2ForCausalLM) -> None:
    lean = LeanDecoder.of(lively_model)
    assert lean is not None
    input_ids, attention_mask = _ragged_prompts()

    def run(decoder: LeanDecoder | None, temperature: float) -> list[tuple[list[int], float]]:
        with torch.inference_mode():
            rows = sample_from(
                lively_model,
                lambda: prefill(lively_model, input_ids, attention_mask),
                counts=[3, 1, 2],
                max_new_tokens=16,
                stop_ids=list(range(6)),
                temperature=temperature,
                generator=torch.Generator().manual_seed(7),
                device=torch.device("cpu"),
                lean=decoder,
            )
        return [(r.token_ids, r.logprob) for r in rows]

    for temperature in (0.0, 1.0):
        ours, theirs = run(lean, temperature), run(None, temperature)
        assert [ids for ids, _ in ours] == [ids for ids, _ in theirs]
        assert [lp for _, lp in ours] == pytest.approx([lp for _, lp in theirs], abs=1e-4)
        assert len({len(ids) for ids, _ in ours}) > 1, "rows should leave the batch at different steps"
    assert LeanDecoder.of(copy.deepcopy(lively_model).to(torch.bfloat16)) is None  # only what it reproduces exactly
