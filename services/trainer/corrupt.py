"""Plausible wrong versions of a correct step, for the PPM's first (bootstrap) training.

Each corruption keeps the step's shape — a comment, valid Python — and makes one mistake of the kinds the
tiny policy makes when it fails (sampled on problems one level above its training, most first wrong steps
hold a number the question does not say, a number of the question that belongs elsewhere, a wrong
operation or variable, or a move skipped):
- "miscopy": a number copied wrongly — a digit dropped, doubled or swapped, or off by a little;
- "question": another number of the question used instead (a distractor, or another move's number);
- "operator": the wrong arithmetic operation;
- "variable": an earlier variable used instead of the right one;
- "skip": the next step written now, the move in between left out.
A changed number is often changed in the step's comment too, as the policy does: a PPM that only compared the
code with its own comment would miss those. The pair (teacher step, corrupted step) shares its prefix, so the
PPM learns to tell a right move from a near-miss before any search tree exists.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.math import stepfmt
from services.trainer.data import StepPair, Trajectory

_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
_OPERATORS = {"+": "-", "-": "+", "*": "/", "/": "*"}
_OPERATOR = re.compile(r"(?<=\s)[-+*/](?=\s)")
_ASSIGNED = re.compile(r"^\s*([A-Za-z_]\w*)\s*=", re.MULTILINE)
_NAME = re.compile(r"\b([A-Za-z_]\w*)\b")

KINDS = ("miscopy", "question", "operator", "variable", "skip")


@dataclass(frozen=True)
class Corruption:
    text: str  # the wrong step
    kind: str  # one of KINDS, or "answer" for a wrong final answer


def _split(step: str) -> tuple[str, str, str]:
    """(comment lines, code lines, end marker) of a code step."""
    body, _, marker = step.rpartition("\n")
    lines = body.split("\n")
    comments = [line for line in lines if line.lstrip().startswith("#")]
    code = [line for line in lines if not line.lstrip().startswith("#")]
    return "\n".join(comments), "\n".join(code), marker


def _join(comments: str, code: str, marker: str) -> str:
    return "\n".join(part for part in (comments, code, marker) if part)


def miscopy(value: int, rng: random.Random) -> int:
    """`value` as a small model miscopies it: a digit dropped, doubled or two swapped, or off by a little."""
    digits = str(value)
    at = rng.randrange(len(digits))
    options = [digits[:at] + digits[at] + digits[at:]]  # a digit doubled
    if len(digits) > 1:
        options.append(digits[:at] + digits[at + 1 :])  # a digit dropped
        at = rng.randrange(len(digits) - 1)
        options.append(digits[:at] + digits[at + 1] + digits[at] + digits[at + 2 :])  # two digits swapped
    options.append(str(value + rng.choice([-2, -1, 1, 2, 10]) if value > 2 else value + rng.choice([1, 2, 3])))
    wrong = [int(option) for option in options if int(option) != value]  # int(): "05" becomes 5
    return rng.choice(wrong) if wrong else value + 1


def _replace_number(text: str, old: str, new: str) -> str:
    return re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w.])", new, text)


def _pick(matches: list[re.Match[str]], rng: random.Random) -> re.Match[str] | None:
    return rng.choice(matches) if matches else None


def _splice(text: str, target: re.Match[str], new: str) -> str:
    return text[: target.start()] + new + text[target.end() :]


def change_number(code: str, rng: random.Random) -> str | None:
    """One number of `code` miscopied."""
    target = _pick(list(_NUMBER.finditer(code)), rng)
    return _splice(code, target, str(miscopy(int(target.group()), rng))) if target else None


def change_operator(code: str, rng: random.Random) -> str | None:
    target = _pick(list(_OPERATOR.finditer(code)), rng)
    return _splice(code, target, _OPERATORS[target.group()]) if target else None


def change_variable(code: str, earlier_names: list[str], rng: random.Random) -> str | None:
    names = list(dict.fromkeys(earlier_names))  # a variable reassigned in several steps is one name
    assigned = set(_ASSIGNED.findall(code))
    target = _pick([m for m in _NAME.finditer(code) if m.group(1) in names and m.group(1) not in assigned], rng)
    if target is None:
        return None
    others = [name for name in names if name != target.group(1)]
    return _splice(code, target, rng.choice(others)) if others else None


def _wrong_number(
    comments: str, code: str, kind: str, question_numbers: list[str], rng: random.Random
) -> tuple[str, str] | None:
    """(comments, code) with one number of the code replaced, in the comment too half of the time."""
    target = _pick(list(_NUMBER.finditer(code)), rng)
    if target is None:
        return None
    old = target.group()
    if kind == "question":
        others = [n for n in dict.fromkeys(question_numbers) if n != old]
        if not others:
            return None
        new = rng.choice(others)
    else:
        new = str(miscopy(int(old), rng))
    code = _splice(code, target, new)
    if rng.random() < 0.5:
        comments = _replace_number(comments, old, new)
    return comments, code


def _changed(
    kind: str, comments: str, code: str, earlier: list[str], question_numbers: list[str], rng: random.Random
) -> tuple[str, str] | None:
    """(comments, code) of a code step with one mistake of `kind` (any kind but "skip"), or None."""
    if kind in ("miscopy", "question"):
        return _wrong_number(comments, code, kind, question_numbers, rng)
    wrong_code = change_operator(code, rng) if kind == "operator" else change_variable(code, earlier, rng)
    return (comments, wrong_code) if wrong_code is not None else None


def _is_code_step(step: str | None) -> bool:
    return step is not None and step.endswith((stepfmt.END_OF_STEP, stepfmt.END_OF_CODE))


def corrupt_step(
    step: str,
    earlier_steps: list[str],
    rng: random.Random,
    *,
    question: str = "",
    next_step: str | None = None,
) -> Corruption | None:
    """A wrong variant of a code or answer step, or None when the step offers nothing to corrupt. With the
    question, a number may be swapped for another of its numbers; with the next step, the move may be skipped."""
    if step.startswith(stepfmt.ANSWER_START):
        wrong_answer = change_number(step, rng)  # a wrong final answer
        return Corruption(wrong_answer, "answer") if wrong_answer is not None else None
    if not _is_code_step(step):
        return None
    comments, code, marker = _split(step)
    earlier = [name for s in earlier_steps for name in _ASSIGNED.findall(s)]
    question_numbers = _NUMBER.findall(question)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "skip":
            wrong = next_step if _is_code_step(next_step) else None
        else:
            changed = _changed(kind, comments, code, earlier, question_numbers, rng)
            wrong = _join(*changed, marker) if changed else None
        if wrong is not None and wrong != step:
            return Corruption(wrong, kind)
    return None


def corrupted_pairs(problems: list, rng: random.Random, per_step: int = 1) -> list[StepPair]:  # type: ignore[type-arg]
    """Teacher steps against up to `per_step` distinct corrupted versions of themselves (this module's
    kinds). Several per step cost little to train: they share the step's prefix."""
    pairs = []
    for problem in problems:
        steps = list(problem.solution)
        for index, step in enumerate(steps):
            wrongs: list[str] = []
            following = steps[index + 1] if index + 1 < len(steps) else None
            for _ in range(3 * per_step):  # a draw may repeat an earlier one
                wrong = corrupt_step(step, steps[:index], rng, question=problem.question, next_step=following)
                if wrong is None:
                    break  # nothing in this step to corrupt
                if wrong.text not in wrongs:
                    wrongs.append(wrong.text)
                    pairs.append(StepPair(problem.question, tuple(steps[:index]), step, wrong.text))
                if len(wrongs) == per_step:
                    break
    return pairs


@dataclass(frozen=True)
class _Solved:
    question: str
    solution: tuple[str, ...]


def trajectory_pairs(trajectories: Sequence[Trajectory], rng: random.Random, per_step: int = 1) -> list[StepPair]:
    """`corrupted_pairs` of supplied trajectories: each step against corrupted versions of itself."""
    return corrupted_pairs([_Solved(t.question, t.steps) for t in trajectories], rng, per_step)
