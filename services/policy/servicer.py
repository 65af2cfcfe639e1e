"""PolicyService: protobuf ↔ domain, nothing else."""

from __future__ import annotations

from typing import Any

from services.policy.core import PolicyCore
from services.policy.engine import GeneratedStep, StepEnd, StepPrompt
from thinkmesh.v1 import policy_pb2, policy_pb2_grpc

_END = {
    StepEnd.STEP: policy_pb2.STEP_END_STEP,
    StepEnd.CODE: policy_pb2.STEP_END_CODE,
    StepEnd.ANSWER: policy_pb2.STEP_END_ANSWER,
    StepEnd.LENGTH: policy_pb2.STEP_END_LENGTH,
}


def _candidate(step: GeneratedStep) -> policy_pb2.Candidate:
    return policy_pb2.Candidate(text=step.text, end=_END[step.end], num_tokens=step.num_tokens, logprob=step.logprob)


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self, core: PolicyCore) -> None:
        self.core = core

    async def GenerateSteps(
        self, request: policy_pb2.GenerateStepsRequest, context: Any
    ) -> policy_pb2.GenerateStepsResponse:
        prompts = [StepPrompt(p.question, tuple(p.steps)) for p in request.prompts]
        params = self.core.resolve(request.n, request.temperature, request.top_p, request.max_new_tokens, request.seed)
        generation = await self.core.generate(prompts, params, timeout_s=context.time_remaining())
        return policy_pb2.GenerateStepsResponse(
            results=[
                policy_pb2.CandidateSet(candidates=[_candidate(step) for step in candidates])
                for candidates in generation.results
            ],
            model_version=generation.model_version,
        )
