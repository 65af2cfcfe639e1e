"""The five difficulty levels: how many reasoning moves, how large the numbers, how many distractor facts.

Each level lets a problem have one more move than the level below (the ``moves`` ranges overlap by one, so
the step from one level to the next is gradual), and every extra move is an arithmetic change (add, take
away, multiply, share) of the kind every family already uses at level 1: composition, not novelty.
Distractor facts (a number the solution must ignore) start rare at level 2 so that a policy trained on the
easy levels has seen them before they become the rule at levels 4 and 5.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LevelSpec:
    level: int
    moves: tuple[int, int]  # inclusive range of reasoning steps (the final print step not counted)
    max_value: int  # largest quantity in a story (start, intermediate and end values)
    max_addend: int  # largest number added or taken away in one move
    max_factor: int  # largest multiplier or divisor in one move
    distractors: tuple[float, ...]  # chance of a first, second, ... distractor fact
    # Chance that a problem takes the number limits of the level above (value, addend, factor). A tiny model
    # does not copy numbers longer than those it was trained on (measured: docs/results.md), so without this
    # the first 3-digit numbers, at level 3, are out of the policy's reach and self-evolution has no solved
    # problem with one to learn from.
    preview_numbers: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.moves[0] <= self.moves[1]:
            raise ValueError(f"level {self.level}: bad moves range {self.moves}")
        if not 0.0 <= self.preview_numbers <= 1.0:
            raise ValueError(f"level {self.level}: preview_numbers must be a probability, not {self.preview_numbers}")


# Levels 2-4 preview the next level's numbers in one problem in five; level 1 needs none (levels 1 and 2 are
# learnt together, both with 2-digit numbers), and level 5 has nothing above it.
LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(1, moves=(1, 2), max_value=60, max_addend=20, max_factor=3, distractors=()),
    2: LevelSpec(2, moves=(2, 3), max_value=100, max_addend=30, max_factor=4, distractors=(0.25,), preview_numbers=0.2),
    3: LevelSpec(3, moves=(3, 4), max_value=200, max_addend=50, max_factor=5, distractors=(0.5,), preview_numbers=0.2),
    4: LevelSpec(4, moves=(4, 5), max_value=500, max_addend=90, max_factor=6, distractors=(1.0,), preview_numbers=0.2),
    5: LevelSpec(5, moves=(5, 6), max_value=1000, max_addend=200, max_factor=9, distractors=(1.0, 0.5)),
}


def level_spec(level: int) -> LevelSpec:
    try:
        return LEVELS[level]
    except KeyError:
        raise ValueError(f"level must be one of {sorted(LEVELS)}, not {level!r}") from None
