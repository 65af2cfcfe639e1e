"""The skill families of the curriculum, one module each."""

from __future__ import annotations

from services.trainer.curriculum.families.arithmetic import ARITHMETIC
from services.trainer.curriculum.families.counting import COUNTING
from services.trainer.curriculum.families.linear import LINEAR
from services.trainer.curriculum.families.number_theory import NUMBER_THEORY
from services.trainer.curriculum.families.percentages import PERCENTAGES
from services.trainer.curriculum.families.ratios import RATIOS
from services.trainer.curriculum.families.systems import SYSTEMS

FAMILIES = {f.name: f for f in (ARITHMETIC, RATIOS, PERCENTAGES, LINEAR, SYSTEMS, NUMBER_THEORY, COUNTING)}
