"""Small real stand-ins for the search's backends: a scripted policy, in-process exec, a rule-based scorer."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from services.math import stepfmt
from services.search.engine.backends import Prompt, Sampled
from services.search.engine.mcts import Candidate, Execution

GOOD = stepfmt.render_step("apples after buying", "x = 3 + 5")
BAD = stepfmt.render_step("apples after buying", "x = 3 - 5")
PRINT = stepfmt.render_step("print it", "print(x)", last=True)


def scripted(steps: tuple[str, ...]) -> list[Candidate]:
    """Two first moves (right and wrong; the right one twice), then print, then the answer the output shows."""
    if not steps:
        return [Candidate(GOOD, True), Candidate(BAD, True), Candidate(GOOD, True)]
    if steps[-1].startswith(stepfmt.OUTPUT_START):
        printed = (stepfmt.parse_step(steps[-1]).output or "?").strip()
        return [Candidate(stepfmt.render_answer(printed), True)]
    return [Candidate(PRINT, True)]


def run_program(program: str) -> Execution:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(program, "<step>", "exec"), {"__name__": "__main__"})
    except Exception as exc:
        return Execution(False, out.getvalue(), f"{type(exc).__name__}: {exc}")
    return Execution(True, out.getvalue())


class ScriptedBackends:
    """Counts calls and batch sizes so tests can see the batching."""

    def __init__(self) -> None:
        self.calls: dict[str, list[int]] = {"policy": [], "sandbox": [], "ppm": [], "grade": []}

    async def generate(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Sampled]], str]:
        self.calls["policy"].append(len(prompts))
        return [[Sampled(c.text, c.finished, 5, -1.5) for c in scripted(p.steps)][:n] for p in prompts], "scripted-v1"

    async def run(self, programs: Sequence[str], timeout_ms: int) -> list[Execution]:
        self.calls["sandbox"].append(len(programs))
        return [run_program(p) for p in programs]

    async def score(self, items: Sequence[Prompt]) -> tuple[list[list[float]], str]:
        self.calls["ppm"].append(len(items))
        return [[0.5 if "3 + 5" in "".join(i.steps) else -0.5] * len(i.steps) for i in items], "rules-v1"

    async def grade(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        self.calls["grade"].append(len(pairs))
        return [reference.strip() == answer.strip() for reference, answer in pairs]
