"""Liveness of the model services under abusive calls: PolicyService and PPMService as real processes over a store
with micro models. A call past its deadline, a cancelled call or an oversized request must not keep the model's
batch thread busy for the calls after it.

Each test measures how long the next, normal call waits and asserts a bound far below what the abusive call would
cost if it ran to its end (minutes for the policy's, tens of seconds for the PPM's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from grpc import aio

from services.common.store import ModelStore
from services.math import stepfmt
from support.processes import THINKMESH, server_process, wait_serving
from support.tiny_models import QUESTION, STEPS, publish_micro_models
from thinkmesh.v1 import policy_pb2, policy_pb2_grpc, ppm_pb2, ppm_pb2_grpc

Reply = TypeVar("Reply")

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

# A normal call waits at most for the one decoding step (policy) or micro-batch (PPM) the batch thread is in when
# the abusive call dies, then runs: about a second on a busy 2-core CPU. Without the fix it waits minutes.
NEXT_CALL_BOUND_S = 8.0
DEADLINE_S = 1.5
TEN_MB = 10 * 1024 * 1024

# Greedy decoding of the untrained micro policy rarely draws a step marker: each of these 64 × 64 candidates would
# run its whole 1,024 tokens, many minutes on a CPU.
HUGE_GENERATE = policy_pb2.GenerateStepsRequest(
    prompts=[policy_pb2.StepPrompt(question=QUESTION.replace("3", str(i))) for i in range(64)],
    n=64,
    temperature=0,
    max_new_tokens=1024,
)
NORMAL_GENERATE = policy_pb2.GenerateStepsRequest(
    prompts=[policy_pb2.StepPrompt(question=QUESTION, steps=STEPS[:1])], n=2, temperature=1.0, max_new_tokens=8
)


def _long_item(i: int) -> ppm_pb2.ScoreItem:
    """About 500 tokens: a micro-batch of 32 costs the micro PPM about a second of CPU, the 512 of a huge call
    tens of seconds."""
    steps = [stepfmt.render_step(f"part {j}", f"x{j} = {j} * {i % 10}") for j in range(18)]
    return ppm_pb2.ScoreItem(question=QUESTION.replace("3", str(i)), steps=steps)


HUGE_SCORE = ppm_pb2.ScoreStepsRequest(items=[_long_item(i) for i in range(512)])
NORMAL_SCORE = ppm_pb2.ScoreStepsRequest(items=[ppm_pb2.ScoreItem(question=QUESTION, steps=STEPS[:2])])


def _env(store: Path, service: str) -> dict[str, str]:
    return {"THINKMESH_STORE": str(store), f"THINKMESH_{service}_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = ModelStore(tmp_path_factory.mktemp("store"))
    publish_micro_models(store)
    return store.root


@pytest.fixture(scope="module")
def policy_address(store: Path) -> Iterator[str]:
    with server_process([THINKMESH, "serve", "policy", "--port", "0"], _env(store, "POLICY")) as (proc, address):
        wait_serving(address, alive=lambda: proc.poll() is None)
        yield address


@pytest.fixture(scope="module")
def ppm_address(store: Path) -> Iterator[str]:
    with server_process([THINKMESH, "serve", "ppm", "--port", "0"], _env(store, "PPM")) as (proc, address):
        wait_serving(address, alive=lambda: proc.poll() is None)
        yield address


async def _timed_failure(call: Awaitable[object]) -> tuple[grpc.StatusCode, str, float]:
    started = time.monotonic()
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or "", time.monotonic() - started


async def _timed(call: Awaitable[Reply]) -> tuple[Reply, float]:
    started = time.monotonic()
    reply = await call
    return reply, time.monotonic() - started


async def test_a_huge_generate_past_its_deadline_frees_the_policy_for_the_next_call(policy_address: str) -> None:
    async with aio.insecure_channel(policy_address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        code, _, failed_after = await _timed_failure(stub.GenerateSteps(HUGE_GENERATE, timeout=DEADLINE_S))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert failed_after < DEADLINE_S + 1.0
        reply, waited = await _timed(stub.GenerateSteps(NORMAL_GENERATE, timeout=30))
        print(f"policy, deadline: the huge call failed after {failed_after:.2f}s, the next call took {waited:.2f}s")
        assert [len(s.candidates) for s in reply.results] == [2]
        assert waited < NEXT_CALL_BOUND_S


async def test_a_cancelled_generate_frees_the_policy_for_the_next_call(policy_address: str) -> None:
    async with aio.insecure_channel(policy_address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        huge = stub.GenerateSteps(HUGE_GENERATE)  # no deadline: only the client going away ends it
        await asyncio.sleep(DEADLINE_S)
        huge.cancel()
        reply, waited = await _timed(stub.GenerateSteps(NORMAL_GENERATE, timeout=30))
        print(f"policy, cancelled: the next call took {waited:.2f}s")
        assert [len(s.candidates) for s in reply.results] == [2]
        assert waited < NEXT_CALL_BOUND_S


async def test_an_oversized_prompt_is_refused_at_once_and_blocks_no_one(policy_address: str) -> None:
    oversized = policy_pb2.GenerateStepsRequest(prompts=[policy_pb2.StepPrompt(question="7" * TEN_MB)], n=1)
    async with aio.insecure_channel(policy_address, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        refused, normal = await asyncio.gather(
            _timed_failure(stub.GenerateSteps(oversized, timeout=60)),
            _timed(stub.GenerateSteps(NORMAL_GENERATE, timeout=30)),
        )
        code, details, refused_after = refused
        print(f"policy, 10 MB prompt: refused after {refused_after:.3f}s, the concurrent call took {normal[1]:.2f}s")
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "32768 characters" in details
        assert refused_after < 2.0  # the transfer of 10 MB and a length check, no tokenizing
        assert normal[1] < NEXT_CALL_BOUND_S


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), 11.0])
async def test_a_temperature_that_is_not_a_finite_number_up_to_the_maximum_is_invalid(
    policy_address: str, temperature: float
) -> None:
    request = policy_pb2.GenerateStepsRequest(prompts=NORMAL_GENERATE.prompts, n=1, temperature=temperature)
    async with aio.insecure_channel(policy_address) as channel:
        code, details, _ = await _timed_failure(
            policy_pb2_grpc.PolicyServiceStub(channel).GenerateSteps(request, timeout=30)
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "temperature" in details


async def test_a_huge_score_past_its_deadline_frees_the_ppm_for_the_next_call(ppm_address: str) -> None:
    async with aio.insecure_channel(ppm_address) as channel:
        stub = ppm_pb2_grpc.PPMServiceStub(channel)
        code, _, failed_after = await _timed_failure(stub.ScoreSteps(HUGE_SCORE, timeout=DEADLINE_S))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        reply, waited = await _timed(stub.ScoreSteps(NORMAL_SCORE, timeout=30))
        print(f"ppm, deadline: the huge call failed after {failed_after:.2f}s, the next call took {waited:.2f}s")
        assert [len(r.scores) for r in reply.results] == [2]
        assert waited < NEXT_CALL_BOUND_S


async def test_a_cancelled_score_frees_the_ppm_for_the_next_call(ppm_address: str) -> None:
    async with aio.insecure_channel(ppm_address) as channel:
        stub = ppm_pb2_grpc.PPMServiceStub(channel)
        huge = stub.ScoreSteps(HUGE_SCORE)
        await asyncio.sleep(DEADLINE_S)
        huge.cancel()
        reply, waited = await _timed(stub.ScoreSteps(NORMAL_SCORE, timeout=30))
        print(f"ppm, cancelled: the next call took {waited:.2f}s")
        assert [len(r.scores) for r in reply.results] == [2]
        assert waited < NEXT_CALL_BOUND_S


async def test_an_oversized_item_is_refused_at_once_and_blocks_no_one(ppm_address: str) -> None:
    oversized = ppm_pb2.ScoreStepsRequest(items=[ppm_pb2.ScoreItem(question="7" * TEN_MB, steps=STEPS[:1])])
    async with aio.insecure_channel(ppm_address, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = ppm_pb2_grpc.PPMServiceStub(channel)
        refused, normal = await asyncio.gather(
            _timed_failure(stub.ScoreSteps(oversized, timeout=60)), _timed(stub.ScoreSteps(NORMAL_SCORE, timeout=30))
        )
        code, details, refused_after = refused
        print(f"ppm, 10 MB item: refused after {refused_after:.3f}s, the concurrent call took {normal[1]:.2f}s")
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "32768 characters" in details
        assert refused_after < 2.0
        assert normal[1] < NEXT_CALL_BOUND_S
