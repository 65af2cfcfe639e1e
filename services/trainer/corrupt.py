"""Plausible wrong versions of a correct step, for the PPM's first (bootstrap) training.

Each corruption keeps the step's shape — same comment, valid Python — and changes one thing a weak policy gets
wrong: a number, an operation, or which variable is used. The pair (teacher step, corrupted step) shares its
prefix, so the PPM learns to tell a right move from a near-miss before any search tree exists.
"""

from __future__ import annotations

import random
import re

from services.common import stepfmt

_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
_OPERATORS = {"+": "-", "-": "+", "*": "/", "/": "*"}
_OPERATOR = re.compile(r"(?<=\s)[-+*/](?=\s)")
_ASSIGNED = re.compile(r"^\s*([A-Za-z_]\w*)\s*=", re.MULTILINE)
_NAME = re.compile(r"\b([A-Za-z_]\w*)\b")


def _split(step: str) -> tuple[str, str, str]:
    """(comment lines, code lines, end marker) of a code step."""
    body, _, marker = step.rpartition("\n")
    lines = body.split("\n")
    comments = [line for line in lines if line.lstrip().startswith("#")]
    code = [line for line in lines if not line.lstrip().startswith("#")]
    return "\n".join(comments), "\n".join(code), marker


def _join(comments: str, code: str, marker: str) -> str:
    return "\n".join(part for part in (comments, code, marker) if part)


def change_number(code: str, rng: random.Random) -> str | None:
    numbers = list(_NUMBER.finditer(code))
    if not numbers:
        return None
    target = rng.choice(numbers)
    value = int(target.group())
    wrong = value + rng.choice([-2, -1, 1, 2, 10]) if value > 2 else value + rng.choice([1, 2, 3])
    return code[: target.start()] + str(wrong) + code[target.end() :]


def change_operator(code: str, rng: random.Random) -> str | None:
    operators = list(_OPERATOR.finditer(code))
    if not operators:
        return None
    target = rng.choice(operators)
    return code[: target.start()] + _OPERATORS[target.group()] + code[target.end() :]


def change_variable(code: str, earlier_names: list[str], rng: random.Random) -> str | None:
    names = list(dict.fromkeys(earlier_names))  # a variable reassigned in several steps is one name
    assigned = set(_ASSIGNED.findall(code))
    used = [m for m in _NAME.finditer(code) if m.group(1) in names and m.group(1) not in assigned]
    if not used:
        return None
    target = rng.choice(used)
    others = [name for name in names if name != target.group(1)]
    if not others:
        return None
    return code[: target.start()] + rng.choice(others) + code[target.end() :]


def corrupt_step(step: str, earlier_steps: list[str], rng: random.Random) -> str | None:
    """A wrong variant of a code or answer step, or None when the step offers nothing to corrupt."""
    if step.startswith(stepfmt.ANSWER_START):
        return change_number(step, rng)  # a wrong final answer
    if not step.endswith((stepfmt.END_OF_STEP, stepfmt.END_OF_CODE)):
        return None
    comments, code, marker = _split(step)
    earlier = [name for s in earlier_steps for name in _ASSIGNED.findall(s)]
    moves = ["number", "operator", "variable"]
    rng.shuffle(moves)
    for move in moves:
        if move == "number":
            wrong = change_number(code, rng)
        elif move == "operator":
            wrong = change_operator(code, rng)
        else:
            wrong = change_variable(code, earlier, rng)
        if wrong is not None and wrong != code:
            return _join(comments, wrong, marker)
    return None
