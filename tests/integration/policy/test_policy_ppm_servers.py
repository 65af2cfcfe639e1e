"""PolicyService and PPMService as real processes over a store with micro models."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.store import ModelStore
from support.processes import THINKMESH, server_process
from support.tiny_models import QUESTION, STEPS, publish_micro_models
from thinkmesh.v1 import policy_pb2, policy_pb2_grpc, ppm_pb2, ppm_pb2_grpc


def _env(store: Path, service: str) -> dict[str, str]:
    return {
        "THINKMESH_STORE": str(store),
        f"THINKMESH_{service}_RELOAD_INTERVAL_S": "0.2",
        f"THINKMESH_{service}_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }


async def _wait_serving(channel: aio.Channel, timeout: float = 60) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while (
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    ).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "never became SERVING"
        await asyncio.sleep(0.1)


async def test_policy_waits_for_a_model_then_serves_and_hot_reloads(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    with server_process([THINKMESH, "serve", "policy", "--port", "0"], _env(store.root, "POLICY")) as (_, address):
        async with aio.insecure_channel(address) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            request = policy_pb2.GenerateStepsRequest(
                prompts=[
                    policy_pb2.StepPrompt(question=QUESTION),
                    policy_pb2.StepPrompt(question=QUESTION, steps=STEPS[:1]),
                ],
                n=3,
                temperature=1.0,
                max_new_tokens=12,
                seed=7,
            )
            # Empty store: not serving, calls refused as UNAVAILABLE.
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.GenerateSteps(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

            publish_micro_models(store)
            await _wait_serving(channel)
            reply = await stub.GenerateSteps(request, timeout=60)
            assert reply.model_version == "v1"
            assert [len(s.candidates) for s in reply.results] == [3, 3]
            for candidate in reply.results[0].candidates:
                assert 0 < candidate.num_tokens <= 12
                assert candidate.end in (
                    policy_pb2.STEP_END_LENGTH,
                    policy_pb2.STEP_END_STEP,
                    policy_pb2.STEP_END_CODE,
                    policy_pb2.STEP_END_ANSWER,
                )
                assert candidate.logprob < 0

            # Bad input is INVALID_ARGUMENT with a message, and the server keeps serving.
            for bad, message in [
                (policy_pb2.GenerateStepsRequest(), "prompts is empty"),
                (policy_pb2.GenerateStepsRequest(prompts=[policy_pb2.StepPrompt(question=" ")]), "question is empty"),
                (policy_pb2.GenerateStepsRequest(prompts=request.prompts, n=10_000), "above this server's maximum"),
            ]:
                with pytest.raises(aio.AioRpcError) as caught:
                    await stub.GenerateSteps(bad, timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert message in (caught.value.details() or "")

            # A new current version is picked up without a restart; calls during the switch all succeed.
            publish_micro_models(store, seed=1)
            versions = set()
            deadline = time.monotonic() + 60
            while "v2" not in versions:
                assert time.monotonic() < deadline, "never switched to v2"
                replies = await asyncio.gather(*(stub.GenerateSteps(request, timeout=60) for _ in range(3)))
                versions |= {r.model_version for r in replies}
            assert versions <= {"v1", "v2"}


async def test_ppm_scores_every_step_in_range(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    publish_micro_models(store)
    with server_process([THINKMESH, "serve", "ppm", "--port", "0"], _env(store.root, "PPM")) as (_, address):
        async with aio.insecure_channel(address) as channel:
            await _wait_serving(channel)
            stub = ppm_pb2_grpc.PPMServiceStub(channel)
            request = ppm_pb2.ScoreStepsRequest(
                items=[
                    ppm_pb2.ScoreItem(question=QUESTION, steps=STEPS),
                    ppm_pb2.ScoreItem(question=QUESTION, steps=STEPS[:1]),
                ]
            )
            reply = await stub.ScoreSteps(request, timeout=60)
            assert reply.model_version == "v1"
            assert [len(r.scores) for r in reply.results] == [4, 1]
            assert all(-1 <= s <= 1 for r in reply.results for s in r.scores)
            # The first step scores the same whatever follows it (scores are read at each step's last token).
            assert reply.results[0].scores[0] == pytest.approx(reply.results[1].scores[0], abs=1e-4)
            for bad in (
                ppm_pb2.ScoreStepsRequest(),
                ppm_pb2.ScoreStepsRequest(items=[ppm_pb2.ScoreItem(question=QUESTION)]),
            ):
                with pytest.raises(aio.AioRpcError) as caught:
                    await stub.ScoreSteps(bad, timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
