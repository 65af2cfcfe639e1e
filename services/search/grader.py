"""The answer grader the searches use in training mode: services.math.grading's process pool behind the engine's
async `AnswerGrader` protocol. Shared by the worker's runtime and the in-process backends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


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
