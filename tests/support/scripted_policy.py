"""A real PolicyService whose engine writes valid, never-repeating steps, slowly: searches that last.

Run as `python -m support.scripted_policy` (settings from THINKMESH_POLICY_*; THINKMESH_TEST_STEP_DELAY_S sets
the delay per call). Every fourth step ends the code, and after an output the answer is what was printed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence

from services.math import stepfmt
from services.policy.engine import GeneratedStep, SamplingParams, StepEnd, StepPrompt
from support.policy_server import serve_engine


class EndlessEngine:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.counter = itertools.count(1)

    @property
    def version(self) -> str:
        return "scripted"

    def _step(self, prompt: StepPrompt) -> GeneratedStep:
        if prompt.steps and prompt.steps[-1].startswith(stepfmt.OUTPUT_START):
            printed = (stepfmt.parse_step(prompt.steps[-1]).output or "0").strip()
            return GeneratedStep(stepfmt.render_answer(printed), StepEnd.ANSWER, 4, -1.0)
        k = next(self.counter)
        last = k % 4 == 0
        code = f"print({k} % 7)" if last else f"x{k} = {k} * 2"
        return GeneratedStep(
            stepfmt.render_step("a move", code, last=last), StepEnd.CODE if last else StepEnd.STEP, 6, -1.0
        )

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        await asyncio.sleep(self.delay_s)
        return [[self._step(p) for _ in range(params.n)] for p in prompts]

    async def close(self) -> None:
        return None


if __name__ == "__main__":
    asyncio.run(serve_engine(EndlessEngine(float(os.environ.get("THINKMESH_TEST_STEP_DELAY_S", "0.05")))))
