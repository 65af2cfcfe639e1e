"""What a skill family is: named templates, each a way to phrase and solve one kind of problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.math.curriculum.draft import Draft, Solved

# build(draft, chain) writes the question and the teacher steps into the draft, with `chain` extra
# arithmetic changes (the level's added moves) on top of the template's own core moves.
Build = Callable[[Draft, int], Solved]


@dataclass(frozen=True)
class Template:
    name: str
    core_moves: int  # steps the template needs with no extra change
    build: Build
    min_chain: int = 0  # templates whose whole content is changes need at least one
    max_chain: int = 99  # 0 for a template whose story has no quantity to change

    def chain_for(self, moves: int) -> int | None:
        """How many changes give `moves` steps in all (None if this template cannot)."""
        chain = max(self.min_chain, moves - self.core_moves)
        return chain if chain <= self.max_chain else None


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    templates: tuple[Template, ...]
