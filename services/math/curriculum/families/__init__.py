"""The skill families of the curriculum, one module each."""

from __future__ import annotations

from services.math.curriculum.families.arithmetic import ARITHMETIC
from services.math.curriculum.families.counting import COUNTING
from services.math.curriculum.families.linear import LINEAR
from services.math.curriculum.families.number_theory import NUMBER_THEORY
from services.math.curriculum.families.percentages import PERCENTAGES
from services.math.curriculum.families.ratios import RATIOS
from services.math.curriculum.families.systems import SYSTEMS

FAMILIES = {f.name: f for f in (ARITHMETIC, RATIOS, PERCENTAGES, LINEAR, SYSTEMS, NUMBER_THEORY, COUNTING)}
