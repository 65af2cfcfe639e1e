"""A generated problem with its reference answer and its teacher solution in the step format."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CurriculumProblem:
    id: str
    question: str
    answer: str  # canonical: "42", "-3", "3/4"
    level: int
    family: str
    template: str
    solution: tuple[str, ...]  # code steps, the print step (<end_of_code>), the output block, the answer step
    moves: int  # reasoning steps, not counting the print step
    distractors: int  # facts in the question that the solution does not use

    @property
    def shape(self) -> str:
        """What a small model finds hard about it: how many moves, how long the question's longest number is."""
        digits = max((len(n) for n in re.findall(r"\d+", self.question)), default=0)
        return f"{self.moves} moves, {digits}-digit numbers"

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["solution"] = list(self.solution)
        return record
