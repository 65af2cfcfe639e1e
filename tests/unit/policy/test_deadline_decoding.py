"""The hf backend stops the work of callers who stopped waiting: between tokens in its own sampling loop, at the
next token in generate(), before rendering a request, and for one caller without touching the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from services.common.errors import DeadlineExceeded
from services.common.store import ModelStore
from services.policy.core import Limits, PolicyCore
from services.policy.decoding import sample_candidates
from services.policy.engine import SamplingParams, StepEnd, StepPrompt
from services.policy.hf_engine import HFEngine
from support.tiny_models import QUESTION, publish_micro_models

LIMITS = Limits(default_n=4, max_n=64, max_prompts=256, default_max_new_tokens=64, max_new_tokens=1024)
# Greedy decoding of the untrained micro policy rarely draws a step marker: these run their whole budget,
# minutes of CPU for 16 prompts × 64 candidates × 1,024 tokens.
HUGE = [StepPrompt(QUESTION.replace("3", str(i))) for i in range(16)]
HUGE_PARAMS = SamplingParams(n=64, temperature=0, max_new_tokens=1024)
SHARED_PARAMS = SamplingParams(n=2, temperature=0, max_new_tokens=200)
# A decoding step of 1,024 rows takes the micro model well under a second, even on a busy CPU.
STOP_BOUND_S = 3.0


@pytest.fixture(scope="module")
def model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
    )
    return Qwen2ForCausalLM(config).eval()


def _rows_per_forward(model: torch.nn.Module) -> tuple[list[int], object]:
    rows: list[int] = []
    handle = model.register_forward_hook(
        lambda _m, _args, kwargs, _out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return rows, handle


def test_the_rows_of_a_caller_who_stopped_waiting_leave_the_batch_at_the_next_token(model: Qwen2ForCausalLM) -> None:
    rows, handle = _rows_per_forward(model)
    gone = {0: False, 1: False}

    def alive(owner: int) -> bool:
        if len(rows) >= 4:  # the prefill and three steps later, owner 0's caller goes away
            gone[0] = True
        return not gone[owner]

    try:
        with torch.inference_mode():
            sampled = sample_candidates(
                model,
                torch.randint(8, 64, (2, 5)),
                torch.ones((2, 5), dtype=torch.long),
                counts=[2, 2],
                max_new_tokens=12,
                stop_ids=[],  # no stop token: only the budget or the caller ends a row
                temperature=0,
                owners=[0, 0, 1, 1],
                alive=alive,
            )
    finally:
        handle.remove()  # type: ignore[attr-defined]
    assert [len(s.token_ids) for s in sampled] == [4, 4, 12, 12]
    assert rows[:4] == [2, 4, 4, 4] and set(rows[4:]) == {2}  # owner 0's rows were dropped, owner 1's ran on


def test_the_loop_stops_when_no_caller_waits_and_never_starts_for_none(model: Qwen2ForCausalLM) -> None:
    rows, handle = _rows_per_forward(model)
    try:
        with torch.inference_mode():
            args = (model, torch.randint(8, 64, (1, 5)), torch.ones((1, 5), dtype=torch.long))
            stopped = sample_candidates(
                *args, counts=[3], max_new_tokens=50, stop_ids=[], temperature=0, owners=[0, 0, 0],
                alive=lambda _: len(rows) < 3,
            )  # fmt: skip
            assert len(rows) == 3 and [len(s.token_ids) for s in stopped] == [3, 3, 3]
            rows.clear()
            never = sample_candidates(
                *args, counts=[3], max_new_tokens=50, stop_ids=[], temperature=0, owners=[0, 0, 0],
                alive=lambda _: False,
            )  # fmt: skip
            assert rows == [] and [s.token_ids for s in never] == [[], [], []]
    finally:
        handle.remove()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy, _ = publish_micro_models(ModelStore(tmp_path_factory.mktemp("store")))
    return policy.path


@pytest.fixture(params=["own loop", "generate() fallback"])
async def core(request: pytest.FixtureRequest, policy_dir: Path) -> AsyncIterator[PolicyCore]:
    engine = HFEngine(policy_dir, "v1", device="cpu")
    if request.param == "generate() fallback":
        engine._stop_ids = None  # markers of several tokens: transformers' generate() with stop strings
    core = PolicyCore(LIMITS)
    await core.slot.install(engine)
    yield core
    await engine.close()


async def _timed_normal_call(core: PolicyCore) -> float:
    started = time.monotonic()
    generation = await core.generate([StepPrompt(QUESTION)], SamplingParams(n=1, temperature=0, max_new_tokens=4))
    assert len(generation.results[0]) == 1
    return time.monotonic() - started


async def test_a_call_past_its_deadline_frees_the_engine_within_a_step(core: PolicyCore) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="GenerateSteps of 16 prompts × 64 candidates did not finish"):
        await core.generate(HUGE, HUGE_PARAMS, timeout_s=0.5)
    assert time.monotonic() - started < 0.5 + 0.5
    assert await _timed_normal_call(core) < STOP_BOUND_S


async def test_a_cancelled_call_frees_the_engine_within_a_step(core: PolicyCore) -> None:
    call = asyncio.create_task(core.generate(HUGE, HUGE_PARAMS))
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await _timed_normal_call(core) < STOP_BOUND_S


async def test_a_caller_that_runs_out_of_time_fails_alone_in_a_shared_batch(policy_dir: Path) -> None:
    engine = HFEngine(policy_dir, "v1", device="cpu", batch_window_ms=200)  # both calls land in one batch
    core = PolicyCore(LIMITS)
    await core.slot.install(engine)
    try:
        hurried, patient = await asyncio.gather(
            core.generate(HUGE, SHARED_PARAMS, timeout_s=0.5),
            core.generate(HUGE[:2], SHARED_PARAMS),
            return_exceptions=True,
        )
        assert isinstance(hurried, DeadlineExceeded)
        assert not isinstance(patient, BaseException)
        assert [len(candidates) for candidates in patient.results] == [2, 2]
        # The patient caller's candidates ran on to their end after the hurried caller's rows left the batch.
        assert all(c.num_tokens == 200 or c.end is not StepEnd.LENGTH for cs in patient.results for c in cs)
        assert engine.batcher.batches_run == 1
    finally:
        await engine.close()
