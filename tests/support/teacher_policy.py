"""A real PolicyService that writes the curriculum's teacher steps — and, beside them, corrupted ones — for
the questions listed in a file (THINKMESH_TEST_TEACHER_FILE: {question: [steps]}). Searches over it find both
right and wrong answers, so a training round has SFT data and PPM pairs without a trained model.

Run as `python -m support.teacher_policy`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

from services.policy.engine import GeneratedStep, SamplingParams, StepEnd, StepPrompt, classify_end
from services.trainer.corrupt import corrupt_step
from support.policy_server import serve_engine


class TeacherEngine:
    def __init__(self, solutions: dict[str, list[str]]) -> None:
        self.solutions = solutions
        self.rng = random.Random(0)

    @property
    def version(self) -> str:
        return "teacher"

    def _candidates(self, prompt: StepPrompt, n: int) -> list[GeneratedStep]:
        solution = self.solutions.get(prompt.question.strip())
        k = len(prompt.steps)
        if solution is None or k >= len(solution):
            return [GeneratedStep("no idea", StepEnd.LENGTH, 2, -9.0)] * n
        right = solution[k]
        texts = [right]
        while len(texts) < n:
            wrong = corrupt_step(right, solution[:k], self.rng)
            texts.append(wrong.text if wrong else right)
        return [GeneratedStep(t, classify_end(t, True), 8, -1.0) for t in texts]

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        return [self._candidates(p, params.n) for p in prompts]

    async def close(self) -> None:
        return None


if __name__ == "__main__":
    asyncio.run(serve_engine(TeacherEngine(json.loads(Path(os.environ["THINKMESH_TEST_TEACHER_FILE"]).read_text()))))
