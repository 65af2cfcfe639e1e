"""The engine's backends over gRPC: PolicyService, SandboxService and PPMService, as a worker calls them in a
cluster (one deadline per call; the channels are the runtime's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.search.engine.backends import Prompt, Sampled, execution
from services.search.engine.mcts import Execution


class GrpcGenerator:
    def __init__(self, channel: Any, deadline_s: float = 600.0) -> None:
        from thinkmesh.v1 import policy_pb2_grpc

        self._stub = policy_pb2_grpc.PolicyServiceStub(channel)
        self._deadline_s = deadline_s

    async def generate(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Sampled]], str]:
        from thinkmesh.v1 import policy_pb2

        request = policy_pb2.GenerateStepsRequest(
            prompts=[policy_pb2.StepPrompt(question=p.question, steps=p.steps) for p in prompts],
            n=n,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
        reply = await self._stub.GenerateSteps(request, timeout=self._deadline_s)
        unfinished = policy_pb2.STEP_END_LENGTH
        sampled = [
            [Sampled(c.text, c.end != unfinished, c.num_tokens, c.logprob) for c in result.candidates]
            for result in reply.results
        ]
        return sampled, reply.model_version


class GrpcRunner:
    def __init__(self, channel: Any, deadline_s: float = 600.0) -> None:
        from thinkmesh.v1 import sandbox_pb2_grpc

        self._stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        self._deadline_s = deadline_s

    async def run(self, programs: Sequence[str], timeout_ms: int) -> list[Execution]:
        from thinkmesh.v1 import sandbox_pb2

        request = sandbox_pb2.ExecuteBatchRequest(
            requests=[sandbox_pb2.ExecuteRequest(code=p, timeout_ms=timeout_ms) for p in programs]
        )
        reply = await self._stub.ExecuteBatch(request, timeout=self._deadline_s)
        names = {v: k.removeprefix("EXECUTE_STATUS_").lower() for k, v in sandbox_pb2.ExecuteStatus.items()}
        return [execution(names[r.status], r.stdout, r.stderr) for r in reply.results]


class GrpcScorer:
    def __init__(self, channel: Any, deadline_s: float = 600.0) -> None:
        from thinkmesh.v1 import ppm_pb2_grpc

        self._stub = ppm_pb2_grpc.PPMServiceStub(channel)
        self._deadline_s = deadline_s

    async def score(self, items: Sequence[Prompt]) -> tuple[list[list[float]], str]:
        from thinkmesh.v1 import ppm_pb2

        request = ppm_pb2.ScoreStepsRequest(
            items=[ppm_pb2.ScoreItem(question=i.question, steps=i.steps) for i in items]
        )
        reply = await self._stub.ScoreSteps(request, timeout=self._deadline_s)
        return [list(r.scores) for r in reply.results], reply.model_version
