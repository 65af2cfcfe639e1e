"""The synthetic curriculum: word problems in seven skill families and five levels, with teacher solutions.

The embedded default grows its own policy on these problems (no pretrained weights can be downloaded where
thinkmesh is built). Each problem has a reference answer and a teacher solution in exactly the step format
of `services.math.stepfmt`: one small reasoning move per step (a comment and one assignment), a print step
ending the code, the output block and the boxed answer. See docs/math.md for the ladder of levels.
"""

from __future__ import annotations

from services.math.curriculum.families import FAMILIES
from services.math.curriculum.generator import generate
from services.math.curriculum.levels import LEVELS, LevelSpec
from services.math.curriculum.problem import CurriculumProblem

__all__ = ["FAMILIES", "LEVELS", "CurriculumProblem", "LevelSpec", "generate"]
