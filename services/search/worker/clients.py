"""The engine's backends over gRPC: PolicyService, SandboxService and PPMService, as a worker calls them in a
cluster (one deadline per call; the channels are the runtime's)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from services.common.channels import AFFINITY_HEADER
from services.common.deadlines import gather_or_cancel
from services.search.engine.backends import Prompt, Sampled, execution
from services.search.engine.mcts import Execution


def affinity_key(question: str) -> str:
    """The routing key of a tree's policy calls: a short stable digest of its question, which every prompt of the
    tree starts with (trees of one question share their prefix, so they may share a replica too)."""
    return hashlib.blake2b(question.encode(), digest_size=8).hexdigest()


class GrpcGenerator:
    """`affinity`: the channel balances by consistent hashing on AFFINITY_HEADER (`open_channel(...,
    affinity_header=AFFINITY_HEADER)`). A batch then goes out as one call per tree key, concurrently, each with its
    key, so every call of a tree reaches the same replica and that replica's prefix cache holds the tree's prefix;
    the replica's own continuous batching merges the calls again, so the split costs RPCs, not batching."""

    def __init__(self, channel: Any, deadline_s: float = 600.0, *, affinity: bool = False) -> None:
        from thinkmesh.v1 import policy_pb2_grpc

        self._stub = policy_pb2_grpc.PolicyServiceStub(channel)
        self._deadline_s = deadline_s
        self._affinity = affinity

    async def generate(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Sampled]], str]:
        if not self._affinity:
            return await self._call(prompts, n, temperature, max_new_tokens, seed, key=None)
        if not prompts:
            return [], ""
        by_key: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_key.setdefault(affinity_key(prompt.question), []).append(i)
        replies = await gather_or_cancel(
            self._call([prompts[i] for i in positions], n, temperature, max_new_tokens, seed, key=key)
            for key, positions in by_key.items()
        )
        sampled: list[list[Sampled]] = [[] for _ in prompts]
        for positions, (rows, _) in zip(by_key.values(), replies, strict=True):
            for i, row in zip(positions, rows, strict=True):
                sampled[i] = row
        # The replicas agree on the version except while they switch to a new one, each in its own time (a
        # round-robin batch mixes versions across ticks then too). The version reported is that of the first
        # prompt's call, as a single call's would be.
        return sampled, replies[0][1]

    async def _call(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int, key: str | None
    ) -> tuple[list[list[Sampled]], str]:
        from thinkmesh.v1 import policy_pb2

        request = policy_pb2.GenerateStepsRequest(
            prompts=[policy_pb2.StepPrompt(question=p.question, steps=p.steps) for p in prompts],
            n=n,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
        metadata = ((AFFINITY_HEADER, key),) if key is not None else None
        reply = await self._stub.GenerateSteps(request, timeout=self._deadline_s, metadata=metadata)
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
