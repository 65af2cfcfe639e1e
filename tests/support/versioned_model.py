"""A model that answers anything and is known only by its version: what a wait for served versions looks at
(the trainer's wait_for_current), behind a real PolicyService or PPMService."""

from __future__ import annotations

from collections.abc import Sequence

from services.policy.engine import GeneratedStep, SamplingParams, StepEnd, StepPrompt
from services.ppm.scorer import ScoreItem


class VersionedModel:
    def __init__(self, version: str) -> None:
        self._version = version

    @property
    def version(self) -> str:
        return self._version

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        return [[GeneratedStep("x<end_of_step>", StepEnd.STEP, 1, -1.0)] * params.n for _ in prompts]

    async def score(self, items: Sequence[ScoreItem]) -> list[list[float]]:
        return [[0.0] * len(item.steps) for item in items]

    async def close(self) -> None:
        pass
