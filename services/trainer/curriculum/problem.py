"""A generated problem with its reference answer and its teacher solution in the step format."""

from __future__ import annotations

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

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["solution"] = list(self.solution)
        return record
