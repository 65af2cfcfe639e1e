"""Building blocks shared by every family: people, the four arithmetic changes, voices, and the draft.

A problem is written into a ``Draft``: each sentence of the question with ``say``, each reasoning move of
the teacher solution with ``step`` (one comment, one assignment). The same change (add / take away /
multiply / share) is phrased by a ``Voice`` in the question and solved by the same kind of step in every
family, which is what makes a higher level a composition of moves the lower levels already teach.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import TypeVar

from services.math.curriculum.levels import LevelSpec
from services.math.curriculum.words import DISTRACTOR_NOUNS, FEMALE_NAMES, MALE_NAMES, PLACES
from services.math.stepfmt import render_answer, render_output, render_step

T = TypeVar("T")


class Op(StrEnum):
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"


ALL_OPS = (Op.ADD, Op.SUB, Op.MUL, Op.DIV)
_SYMBOL = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.DIV: "//"}
_INVERSE = {Op.ADD: Op.SUB, Op.SUB: Op.ADD, Op.MUL: Op.DIV, Op.DIV: Op.MUL}
# Adding and taking away are the commonest moves in word problems; multiplying and sharing are rarer.
_WEIGHT = {Op.ADD: 3.0, Op.SUB: 3.0, Op.MUL: 1.5, Op.DIV: 1.5}


@dataclass(frozen=True)
class Change:
    """One arithmetic change of a quantity: value (op) k. DIV only ever divides exactly."""

    op: Op
    k: int

    def apply(self, value: int) -> int:
        if self.op is Op.ADD:
            return value + self.k
        if self.op is Op.SUB:
            return value - self.k
        if self.op is Op.MUL:
            return value * self.k
        return value // self.k

    def undo(self, value: int) -> int:
        return Change(_INVERSE[self.op], self.k).apply(value)

    def code(self, expr: str) -> str:
        return f"{expr} {_SYMBOL[self.op]} {self.k}"

    def undo_code(self, expr: str) -> str:
        return f"{expr} {_SYMBOL[_INVERSE[self.op]]} {self.k}"


@dataclass(frozen=True)
class Person:
    name: str
    he: str  # subject pronoun, lower case ("she", "he", "it", "they")
    his: str  # possessive ("her", "his", "its", "their")
    female: bool | None = None  # None: not a person (a machine) or a group

    @property
    def He(self) -> str:  # capitalised: reads like the sentence it starts
        return self.he.capitalize()

    @property
    def His(self) -> str:
        return self.his.capitalize()

    def fields(self) -> dict[str, str]:
        return {
            "name": self.name,
            "he": self.he,
            "He": self.he.capitalize(),
            "his": self.his,
            "His": self.his.capitalize(),
        }


@dataclass(frozen=True)
class Voice:
    """How one scene phrases each change in the question, and names it in the step's comment.

    Clause fields: {He} {he} {his} {His} {name} {k} {noun}; comment fields: {k} {noun}.
    """

    clauses: Mapping[Op, Sequence[str]]
    comments: Mapping[Op, str]

    @property
    def ops(self) -> tuple[Op, ...]:
        return tuple(op for op in ALL_OPS if op in self.clauses)

    def clause(self, rng: random.Random, change: Change, who: Person, noun: str) -> str:
        template = rng.choice(self.clauses[change.op])
        return template.format(k=change.k, noun=noun, **who.fields())

    def comment(self, change: Change, noun: str) -> str:
        return self.comments[change.op].format(k=change.k, noun=noun)


def story_voice(gain: str, lose: str, *, ops: Sequence[Op] = ALL_OPS) -> Voice:
    """A person gaining and losing things: `gain`/`lose` are verbs in the third person ("buys", "eats")."""
    clauses: dict[Op, Sequence[str]] = {
        Op.ADD: (
            f"{{He}} {gain} {{k}} more {{noun}}.",
            f"Then {{he}} {gain} {{k}} more {{noun}}.",
            f"Later {{he}} {gain} another {{k}} {{noun}}.",
        ),
        Op.SUB: (
            f"{{He}} {lose} {{k}} {{noun}}.",
            f"Then {{he}} {lose} {{k}} {{noun}}.",
            f"After that, {{he}} {lose} {{k}} {{noun}}.",
        ),
        Op.MUL: ("{He} now has {k} times as many {noun}.", "Soon {he} has {k} times as many {noun}."),
        Op.DIV: ("{He} keeps only 1/{k} of the {noun}.", "{He} keeps 1 of {k} equal piles of {noun}."),
    }
    comments = {
        Op.ADD: "{k} more {noun}",
        Op.SUB: "{k} fewer {noun}",
        Op.MUL: "{k} times as many {noun}",
        Op.DIV: "1/{k} of the {noun}",
    }
    return Voice({op: clauses[op] for op in ops}, comments)


def group_voice(arrive: str, leave: str, *, subject: str = "people") -> Voice:
    """A crowd that grows and shrinks on its own ("5 people get on")."""
    clauses: dict[Op, Sequence[str]] = {
        Op.ADD: (
            f"{{k}} more {subject} {arrive}.",
            f"Then {{k}} more {subject} {arrive}.",
            f"Later another {{k}} {subject} {arrive}.",
        ),
        Op.SUB: (
            f"{{k}} {subject} {leave}.",
            f"Then {{k}} {subject} {leave}.",
            f"After that, {{k}} {subject} {leave}.",
        ),
        Op.MUL: (
            f"Then the number of {subject} grows to {{k}} times as many.",
            f"Soon there are {{k}} times as many {subject}.",
        ),
        Op.DIV: (f"Then only 1 of every {{k}} {subject} stays.", f"Only 1 in {{k}} of the {subject} stays."),
    }
    comments = {
        Op.ADD: f"{{k}} more {subject}",
        Op.SUB: f"{{k}} fewer {subject}",
        Op.MUL: f"{{k}} times as many {subject}",
        Op.DIV: f"1 of every {{k}} {subject} stays",
    }
    return Voice(clauses, comments)


ABSTRACT = Voice(
    clauses={
        Op.ADD: ("{He} adds {k}.", "Then {he} adds {k}.", "Next {he} adds {k} to it."),
        Op.SUB: ("{He} subtracts {k}.", "Then {he} takes away {k}.", "Next {he} subtracts {k}."),
        Op.MUL: (
            "{He} multiplies it by {k}.",
            "Then {he} multiplies the result by {k}.",
            "Next {he} multiplies it by {k}.",
        ),
        Op.DIV: ("{He} divides it by {k}.", "Then {he} divides the result by {k}.", "Next {he} divides it by {k}."),
    },
    comments={Op.ADD: "add {k}", Op.SUB: "subtract {k}", Op.MUL: "multiply by {k}", Op.DIV: "divide by {k}"},
)


@dataclass(frozen=True)
class Solved:
    """What a template hands back: the question sentence, the variable that holds the answer, its value."""

    question: str
    var: str
    value: int | Fraction


@dataclass(frozen=True)
class Written:
    question: str
    answer: str
    solution: tuple[str, ...]
    moves: int
    distractors: int


class Draft:
    """One problem being written: question sentences and teacher steps, with the level's limits."""

    def __init__(self, rng: random.Random, spec: LevelSpec) -> None:
        self.rng = rng
        self.spec = spec
        self.sentences: list[str] = []
        self.steps: list[str] = []
        self._imported: set[str] = set()
        self._names: set[str] = set()
        self.main: Person | None = None  # the person pronouns refer to; distractors avoid their gender

    # ------------------------------------------------------------------------------------------ drawing
    def person(self, *, female: bool | None = None, main: bool = True) -> Person:
        if female is None:
            female = self.rng.random() < 0.5
        names = [n for n in (FEMALE_NAMES if female else MALE_NAMES) if n not in self._names]
        name = self.rng.choice(names)
        self._names.add(name)
        who = Person(name, "she" if female else "he", "her" if female else "his", female)
        if main and self.main is None:
            self.main = who
        return who

    def other(self) -> Person:
        """A second person, named only: never the referent of a pronoun."""
        return self.person(main=False)

    def number(self, low: int, high: int) -> int:
        return self.rng.randint(low, max(low, high))

    def pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def multiple(self, of: int, low: int, high: int) -> int:
        """A random multiple of `of` in low..high (the smallest multiple >= low if none fits)."""
        first = -(-low // of)
        return of * self.number(first, max(first, high // of))

    # -------------------------------------------------------------------------------------------- changes
    def plan(
        self,
        count: int,
        end: int,
        *,
        ops: Sequence[Op] = ALL_OPS,
        high: int | None = None,
    ) -> tuple[int, list[Change]]:
        """A start value and `count` changes leading from it to `end`, every value in 2..high.

        Planned backwards from the end, so a template can choose an end value with the property its last
        move needs (a multiple of 3 for "2/3 of them", a total that two unknowns share, ...).
        """
        high = high or self.spec.max_value
        value, changes = end, []
        for _ in range(count):
            change = self._change_into(value, ops, high)
            changes.append(change)
            value = change.undo(value)
        changes.reverse()
        return value, changes

    def _change_into(self, value: int, ops: Sequence[Op], high: int) -> Change:
        spec = self.spec
        factors = range(2, spec.max_factor + 1)
        options: dict[Op, list[int]] = {
            Op.ADD: list(range(2, min(spec.max_addend, value - 2) + 1)),  # came from value - k >= 2
            Op.SUB: list(range(2, min(spec.max_addend, high - value) + 1)),  # came from value + k <= high
            Op.MUL: [f for f in factors if value % f == 0 and value // f >= 2],
            Op.DIV: [f for f in factors if value * f <= high],
        }
        usable = [op for op in ops if options[op]]
        if not usable:  # only for tiny values near the limits; a small take-away always fits
            return Change(Op.SUB, 1)
        op = self.rng.choices(usable, weights=[_WEIGHT[o] for o in usable])[0]
        return Change(op, self.rng.choice(options[op]))

    def tell(self, voice: Voice, who: Person, noun: str, var: str, start: int, changes: Sequence[Change]) -> str:
        """Say each change and solve it in one step; returns the expression for the final value."""
        expr = str(start)
        for change in changes:
            self.say(voice.clause(self.rng, change, who, noun))
            self.step(voice.comment(change, noun), f"{var} = {change.code(expr)}")
            expr = var
        return expr

    def stock(
        self,
        chain: int,
        end: int,
        *,
        who: Person,
        voice: Voice,
        noun: str,
        intro: str,
        var: str | None = None,
        high: int | None = None,
    ) -> str:
        """Introduce a quantity, change it `chain` times so that it ends at `end`; returns its expression.

        `intro` is the opening sentence with a {start} field (and the Person fields, {noun}).
        """
        start, changes = self.plan(chain, end, ops=voice.ops, high=high)
        self.say(intro.format(start=start, noun=noun, **who.fields()))
        return self.tell(voice, who, noun, var or noun, start, changes)

    def undo(self, voice: Voice, noun: str, var: str, end: int, changes: Sequence[Change]) -> str:
        """Work back from the end value through `changes`, one step per change (linear equations)."""
        expr = str(end)
        for change in reversed(changes):
            self.step("undo: " + voice.comment(change, noun), f"{var} = {change.undo_code(expr)}")
            expr = var
        return expr

    # ---------------------------------------------------------------------------------------- writing
    def say(self, sentence: str) -> None:
        self.sentences.append(sentence)

    def step(self, comment: str, code: str, *, needs: str | None = None) -> None:
        """One reasoning move. `needs` is an import line, written the first time a step needs it."""
        if needs is not None and needs not in self._imported:
            self._imported.add(needs)
            code = f"{needs}\n{code}"
        self.steps.append(render_step(comment, code))

    def distractor(self) -> str:
        """A fact with a number that the solution must not use."""
        female = None if self.main is None or self.main.female is None else not self.main.female
        other = self.person(female=female, main=False)
        n = self.number(2, min(self.spec.max_addend, 80))  # an age or a distance in minutes: keep it real
        noun = self.pick(DISTRACTOR_NOUNS)
        options = [
            f"{other.name} has {n} {noun}.",
            f"{other.name} buys {n} {noun}.",
            f"{other.name} is {n} years old.",
            f"The {self.pick(PLACES)} is {n} minutes away.",
        ]
        if self.main is not None and self.main.female is not None:
            options.append(f"{self.main.he.capitalize()} also has {n} {noun}.")
        return self.pick(options)

    def finish(self, solved: Solved) -> Written:
        """Add distractors and the question; close the solution with the print step, output and answer."""
        moves, distractors = len(self.steps), 0
        for chance in self.spec.distractors:
            if self.rng.random() < chance:
                self.sentences.insert(self.number(1, len(self.sentences)), self.distractor())
                distractors += 1
        answer = str(solved.value)  # int -> "42"; Fraction -> "3/4" (or "2" when whole)
        self.steps.append(render_step("print the answer", f"print({solved.var})", last=True))
        solution = (*self.steps, render_output(answer + "\n"), render_answer(answer))
        return Written(" ".join([*self.sentences, solved.question]), answer, solution, moves, distractors)
