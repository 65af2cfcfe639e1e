"""What the search needs from the other services, as small protocols, with two implementations each:

- over gRPC (`GrpcBackends`): PolicyService, SandboxService, PPMService, as in a cluster;
- in process (`LocalBackends`): the same cores called directly — `thinkmesh eval` by default and tests.

The orchestrator only sees `Backends`, so the same search code runs in both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.search.mcts import Execution


@dataclass(frozen=True)
class Prompt:
    question: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class Sampled:
    text: str
    finished: bool  # ended at a step marker
    num_tokens: int
    logprob: float = 0.0  # sum over its tokens, under the distribution they were sampled from


class Generator(Protocol):
    async def generate(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Sampled]], str]: ...


class Runner(Protocol):
    async def run(self, programs: Sequence[str], timeout_ms: int) -> list[Execution]: ...


class Scorer(Protocol):
    async def score(self, items: Sequence[Prompt]) -> tuple[list[list[float]], str]: ...


class AnswerGrader(Protocol):
    async def grade(self, pairs: Sequence[tuple[str, str]]) -> list[bool]: ...


@dataclass
class Backends:
    generator: Generator
    runner: Runner
    scorer: Scorer
    grader: AnswerGrader


# --------------------------------------------------------------------------------------------------- shared


class ProcessGrader:
    """services.math.grading.Grader (a process pool; never hangs) behind the async protocol."""

    def __init__(self) -> None:
        from services.math.grading import Grader

        self._grader = Grader()

    async def grade(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        results = await asyncio.to_thread(self._grader.grade_many, list(pairs))
        return [r.equal for r in results]

    def close(self) -> None:
        self._grader.close()


def _execution(status: str, stdout: str, stderr: str) -> Execution:
    return Execution(ok=status == "ok", stdout=stdout, error="" if status == "ok" else (stderr or status)[-500:])


# ----------------------------------------------------------------------------------------------------- gRPC


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
        return [_execution(names[r.status], r.stdout, r.stderr) for r in reply.results]


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


# ---------------------------------------------------------------------------------------------- in process


class LocalGenerator:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def generate(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Sampled]], str]:
        from services.policy.engine import SamplingParams, StepEnd, StepPrompt

        results = await self.engine.generate(
            [StepPrompt(p.question, p.steps) for p in prompts],
            SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed or None),
        )
        return (
            [[Sampled(c.text, c.end is not StepEnd.LENGTH, c.num_tokens, c.logprob) for c in row] for row in results],
            self.engine.version,
        )


class LocalRunner:
    def __init__(self, executor: Any) -> None:
        self.executor = executor

    async def run(self, programs: Sequence[str], timeout_ms: int) -> list[Execution]:
        from services.sandbox.model import Program

        results = await self.executor.execute_batch([Program(code=p, timeout_ms=timeout_ms) for p in programs])
        return [_execution(r.status.value, r.stdout, r.stderr) for r in results]


class LocalScorer:
    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    async def score(self, items: Sequence[Prompt]) -> tuple[list[list[float]], str]:
        from services.ppm.scorer import ScoreItem

        scores = await self.scorer.score([ScoreItem(i.question, i.steps) for i in items])
        return scores, self.scorer.version
