"""The policy's core: validates requests and answers them with the engine in its slot (see hot_reload)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.deadlines import within_deadline
from services.common.errors import InvalidInput
from services.common.hot_reload import Slot
from services.policy.engine import GeneratedStep, GenerationEngine, SamplingParams, StepPrompt
from services.policy.settings import MAX_PROMPT_CHARS, MAX_REQUEST_CHARS, MAX_TEMPERATURE


@dataclass(frozen=True)
class Limits:
    default_n: int
    max_n: int
    max_prompts: int
    default_max_new_tokens: int
    max_new_tokens: int
    # Bounds on the raw text, checked before anything is tokenized (services/policy/settings.py says why).
    max_prompt_chars: int = MAX_PROMPT_CHARS  # one prompt: its question and steps
    max_request_chars: int = MAX_REQUEST_CHARS  # all the prompts of a request
    max_temperature: float = MAX_TEMPERATURE


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
        for name, value in (("temperature", temperature), ("top_p", top_p)):
            if not math.isfinite(value):
                raise InvalidInput(f"{name}={value} is not a finite number")
        if temperature < 0:
            raise InvalidInput(f"temperature={temperature} must not be negative")
        if temperature > self.limits.max_temperature:
            raise InvalidInput(
                f"temperature={temperature} is above this server's maximum of {self.limits.max_temperature}"
            )
        if not 0 <= top_p <= 1:
            raise InvalidInput(f"top_p={top_p} must be between 0 and 1 (0 = 1)")
        return SamplingParams(
            n=n, temperature=temperature, top_p=top_p or 1.0, max_new_tokens=max_new_tokens, seed=seed or None
        )

    def check_prompts(self, prompts: Sequence[StepPrompt]) -> None:
        """The request's shape and size, on the raw text: nothing has been tokenized yet."""
        if not prompts:
            raise InvalidInput("prompts is empty: send at least one StepPrompt")
        if len(prompts) > self.limits.max_prompts:
            raise InvalidInput(f"{len(prompts)} prompts is above this server's maximum of {self.limits.max_prompts}")
        total = 0
        for index, prompt in enumerate(prompts):
            chars = len(prompt.question) + sum(len(step) for step in prompt.steps)
            if chars > self.limits.max_prompt_chars:
                raise InvalidInput(
                    f"prompts[{index}] is {chars} characters (question and steps); this server's maximum is "
                    f"{self.limits.max_prompt_chars} characters"
                )
            total += chars
            if not prompt.question.strip():
                raise InvalidInput(f"prompts[{index}].question is empty")
        if total > self.limits.max_request_chars:
            raise InvalidInput(
                f"the prompts are {total} characters in all; this server's maximum for a request is "
                f"{self.limits.max_request_chars} characters"
            )

    async def generate(
        self, prompts: Sequence[StepPrompt], params: SamplingParams, *, timeout_s: float | None = None
    ) -> Generation:
        """n candidates for each prompt, within `timeout_s` (the caller's deadline; None: none). Past it the work
        stops (the engine drops the request's rows) and DeadlineExceeded is raised; a cancelled caller's work
        stops the same way."""
        self.check_prompts(prompts)
        what = f"GenerateSteps of {len(prompts)} prompts × {params.n} candidates"
        async with within_deadline(timeout_s, what), self.slot.lease() as engine:
            results = await engine.generate(prompts, params)
            return Generation(results, engine.version)
