"""`generate(level, n, seed)`: the curriculum's problems, deterministic by seed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from services.math.curriculum.draft import Draft
from services.math.curriculum.families import FAMILIES
from services.math.curriculum.family import Family, Template
from services.math.curriculum.levels import LevelSpec, level_spec
from services.math.curriculum.problem import CurriculumProblem


def generate(level: int, n: int, seed: int = 0, *, families: Sequence[str] | None = None) -> list[CurriculumProblem]:
    """`n` problems of one level. Problem i depends only on (seed, level, i): a longer list extends a shorter
    one, and the same arguments always give the same problems."""
    if n < 0:
        raise ValueError("n must be >= 0")
    spec = level_spec(level)
    chosen = _families(families)
    problems = []
    for index in range(n):
        rng = random.Random(f"thinkmesh-curriculum/{seed}/{level}/{index}")
        family = rng.choice(chosen)
        moves = rng.randint(*spec.moves)
        template, chain = _template(rng, family, moves)
        draft = Draft(rng, _limits(rng, spec))
        written = draft.finish(template.build(draft, chain))
        problems.append(
            CurriculumProblem(
                id=f"curriculum-L{level}-s{seed}-{index}",
                question=written.question,
                answer=written.answer,
                level=level,
                family=family.name,
                template=template.name,
                solution=written.solution,
                moves=written.moves,
                distractors=written.distractors,
            )
        )
    return problems


def _limits(rng: random.Random, spec: LevelSpec) -> LevelSpec:
    """The problem's number limits: its level's, or with the level's `preview_numbers` chance the level
    above's. A level without previews draws nothing more, so its problems do not depend on this."""
    if spec.preview_numbers and rng.random() < spec.preview_numbers:
        above = level_spec(spec.level + 1)
        spec = replace(spec, max_value=above.max_value, max_addend=above.max_addend, max_factor=above.max_factor)
    return spec


def _families(names: Sequence[str] | None) -> list[Family]:
    if names is None:
        return list(FAMILIES.values())
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    return [FAMILIES[name] for name in names]


def _template(rng: random.Random, family: Family, moves: int) -> tuple[Template, int]:
    fitting = [(t, chain) for t in family.templates if (chain := t.chain_for(moves)) is not None]
    return rng.choice(fitting)
