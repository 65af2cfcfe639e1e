"""The policy's core: validates requests and answers them with the engine in its slot (see hot_reload)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import InvalidInput
from services.common.hot_reload import Slot
from services.policy.engine import GeneratedStep, GenerationEngine, SamplingParams, StepPrompt


@dataclass(frozen=True)
class Limits:
    default_n: int
    max_n: int
    max_prompts: int
    default_max_new_tokens: int
    max_new_tokens: int


@dataclass(frozen=True)
class Generation:
    results: list[list[GeneratedStep]]
    model_version: str


class PolicyCore:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.slot: Slot[GenerationEngine] = Slot("policy")

    @property
    def version(self) -> str | None:
        return self.slot.version

    def resolve(self, n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> SamplingParams:
        """Request fields → sampling parameters, with defaults for zeros and limits enforced."""
        n = n or self.limits.default_n
        max_new_tokens = max_new_tokens or self.limits.default_max_new_tokens
        if n > self.limits.max_n:
            raise InvalidInput(f"n={n} is above this server's maximum of {self.limits.max_n}")
        if max_new_tokens > self.limits.max_new_tokens:
            raise InvalidInput(
                f"max_new_tokens={max_new_tokens} is above this server's maximum of {self.limits.max_new_tokens}"
            )
        if temperature < 0:
            raise InvalidInput(f"temperature={temperature} must not be negative")
        if not 0 <= top_p <= 1:
            raise InvalidInput(f"top_p={top_p} must be between 0 and 1 (0 = 1)")
        return SamplingParams(
            n=n, temperature=temperature, top_p=top_p or 1.0, max_new_tokens=max_new_tokens, seed=seed or None
        )

    def check_prompts(self, prompts: Sequence[StepPrompt]) -> None:
        if not prompts:
            raise InvalidInput("prompts is empty: send at least one StepPrompt")
        if len(prompts) > self.limits.max_prompts:
            raise InvalidInput(f"{len(prompts)} prompts is above this server's maximum of {self.limits.max_prompts}")
        for index, prompt in enumerate(prompts):
            if not prompt.question.strip():
                raise InvalidInput(f"prompts[{index}].question is empty")

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> Generation:
        self.check_prompts(prompts)
        async with self.slot.lease() as engine:
            results = await engine.generate(prompts, params)
            return Generation(results, engine.version)
