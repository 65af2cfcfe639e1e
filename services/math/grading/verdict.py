"""What a grading says: equal or not, why, and which path decided it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Method = Literal["numeric", "string", "math_verify", "timeout", "error", "empty"]
# A check runs in a worker: (reference, prediction, timeout in whole seconds) -> (equal, reason).
Check = Callable[[str, str, int], tuple[bool, str]]


@dataclass(frozen=True)
class GradeResult:
    equal: bool
    reason: str
    method: Method
