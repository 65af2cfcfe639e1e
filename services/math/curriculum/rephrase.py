"""The same curriculum problem said another way: sentences joined, a noun left implicit, a particle moved, the
question asked differently, a verb swapped for a synonym.

The curriculum's templates say each move in a few fixed ways; a person does not ("Mia has 14 marbles and gives
5 away. How many are left?"). A ``Rephrasing`` rewrites a question with rules that keep every number and every
fact, so the answer and the teacher solution stand as they are. Two sets of rules are disjoint by design:
``TAUGHT`` rephrases part of the bootstrap's training problems, ``HELD_OUT`` is never trained on and measures
whether the models understand a wording they have not seen (`thinkmesh eval --dataset curriculum --rephrase
held-out`, docs/results.md).

A rule sees the question's sentences and the problem's own random generator; each rule fires with the
rephrasing's chance, so a rephrased question mixes new and old wordings as people do.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from services.math.curriculum.generator import generate
from services.math.curriculum.problem import CurriculumProblem
from services.math.curriculum.words import FEMALE_NAMES, MALE_NAMES

Rule = Callable[[list[str], random.Random], list[str]]

_NAMES = "|".join(sorted(FEMALE_NAMES + MALE_NAMES, key=len, reverse=True))
_OWNS = re.compile(rf"^((?:{_NAMES}) (?:has|collects|starts with) (?:(?! and )[^.?!])*)\.$")
_PRONOUN_CLAUSE = re.compile(r"^(?:She|He) ([a-z][^.?!]*)\.$")
_THEN_CLAUSE = re.compile(r"^Then (she|he) ([a-z][^.?!]*)\.$")
_COUNTED = re.compile(r"\b(\d+) (more )?([a-z]+)\b")
_HOW_MANY_HAVE = re.compile(rf"^How many ([a-z]+) does ((?:{_NAMES})|she|he) have (?:now|in the end|at the end)\?$")


def sentences(question: str) -> list[str]:
    return re.split(r"(?<=[.?!])\s+", question.strip())


def _one_of(rng: random.Random, indices: Sequence[int]) -> int | None:
    return rng.choice(indices) if indices else None


def _counted_nouns(sentence: str) -> set[str]:
    return {noun for _, _, noun in _COUNTED.findall(sentence)}


# --------------------------------------------------------------------------------------------- taught rules
def join_with_and(parts: list[str], rng: random.Random) -> list[str]:
    """Joins two sentences: "Mia has 14 marbles. She gives away 5." -> "Mia has 14 marbles and gives away 5."."""
    spots = [i for i in range(len(parts) - 1) if _OWNS.match(parts[i]) and _PRONOUN_CLAUSE.match(parts[i + 1])]
    i = _one_of(rng, spots)
    if i is None:
        return parts
    owns, clause = _OWNS.match(parts[i]), _PRONOUN_CLAUSE.match(parts[i + 1])
    assert owns and clause
    return [*parts[:i], f"{owns.group(1)} and {clause.group(1)}.", *parts[i + 2 :]]


def _the_one_noun_before(parts: list[str], i: int) -> str | None:
    """The noun counted in the sentence before `i`, when it counts exactly one kind of thing."""
    nouns = _counted_nouns(parts[i - 1]) if i > 0 else set()
    return next(iter(nouns)) if len(nouns) == 1 else None


def leave_the_noun_implicit(parts: list[str], rng: random.Random) -> list[str]:
    """Leaves a noun implicit: "She gives away 5 marbles." -> "... 5." when the sentence before counts only marbles."""
    spots = []
    for at in range(1, len(parts)):
        noun = _the_one_noun_before(parts, at)
        found = _COUNTED.findall(parts[at])
        if noun and len(found) == 1 and found[0][2] == noun and parts[at].endswith(f" {noun}."):
            spots.append(at)
    i = _one_of(rng, spots)
    if i is None:
        return parts
    noun = _counted_nouns(parts[i]).pop()
    return [*parts[:i], parts[i][: -len(noun) - 2] + ".", *parts[i + 1 :]]


_PARTICLE = re.compile(r"\b(gives|trades) away (\d+)( [a-z]+)?\b")


def move_the_particle(parts: list[str], rng: random.Random) -> list[str]:
    """Moves a particle: "gives away 5 marbles" -> "gives 5 marbles away"; "gives away 5" -> "gives 5 away"."""
    spots = [i for i, s in enumerate(parts) if _PARTICLE.search(s)]
    i = _one_of(rng, spots)
    if i is None:
        return parts
    moved = _PARTICLE.sub(lambda m: f"{m.group(1)} {m.group(2)}{m.group(3) or ''} away", parts[i], count=1)
    return [*parts[:i], moved, *parts[i + 1 :]]


def asking(*forms: str) -> Rule:
    """A rule that asks "How many marbles does Mia have now?" in one of `forms` ({noun}, {who})."""

    def ask(parts: list[str], rng: random.Random) -> list[str]:
        asked = _HOW_MANY_HAVE.match(parts[-1])
        if asked is None:
            return parts
        noun, who = asked.groups()
        return [*parts[:-1], rng.choice(forms).format(noun=noun, who=who)]

    return ask


ask_another_way = asking(
    "How many {noun} are left?",
    "How many are left?",
    "How many {noun} does {who} have left?",
    "How many {noun} does {who} end up with?",
    "How many {noun} are there now?",
)


def swapping(words: dict[str, Sequence[str]]) -> Rule:
    """A rule that says one of `words` (a verb or a link word) another way."""

    def swap(parts: list[str], rng: random.Random) -> list[str]:
        spots = [(i, w) for i, s in enumerate(parts) for w in words if re.search(rf"\b{w}\b", s)]
        if not spots:
            return parts
        i, word = rng.choice(spots)
        return [*parts[:i], re.sub(rf"\b{word}\b", rng.choice(words[word]), parts[i], count=1), *parts[i + 1 :]]

    return swap


# One verb or link word said another way.
use_a_synonym = swapping(
    {
        "buys": ("purchases",),
        "gives away": ("hands out",),
        "gets": ("is given",),
        "sells": ("sells off",),
        "After that,": ("Afterwards,",),
        "Then": ("Next",),
    }
)


# ------------------------------------------------------------------------------------------- held-out rules
def join_with_and_then(parts: list[str], rng: random.Random) -> list[str]:
    """Joins with "and then": "Mia has 14 marbles. Then she gives away 5." -> "..., and then she gives away 5."."""
    spots = [i for i in range(len(parts) - 1) if parts[i].endswith(".") and _THEN_CLAUSE.match(parts[i + 1])]
    i = _one_of(rng, spots)
    if i is None:
        return parts
    clause = _THEN_CLAUSE.match(parts[i + 1])
    assert clause
    return [*parts[:i], f"{parts[i][:-1]}, and then {clause.group(1)} {clause.group(2)}.", *parts[i + 2 :]]


# Question forms the training never sees.
ask_yet_another_way = asking(
    "How many {noun} is {who} left with?", "How many {noun} remain?", "Find the number of {noun} {who} has now."
)


use_an_unseen_synonym = swapping(
    {
        "buys": ("picks up",),
        "gives away": ("donates",),
        "gets": ("receives",),
        "eats": ("eats up",),
        "After that,": ("Later on,",),
        "Then": ("After this",),
    }
)


@dataclass(frozen=True)
class Rephrasing:
    name: str
    rules: tuple[Rule, ...]
    chance: float = 0.5  # each rule's

    def question(self, question: str, rng: random.Random) -> str:
        parts = sentences(question)
        for rule in self.rules:
            if rng.random() < self.chance:
                parts = rule(parts, rng)
        return " ".join(parts)

    def problem(self, problem: CurriculumProblem) -> CurriculumProblem:
        """The problem with its question rephrased; deterministic by the problem's id and this rephrasing."""
        rng = random.Random(f"thinkmesh-rephrase/{self.name}/{problem.id}")
        return replace(problem, question=self.question(problem.question, rng))


# In this order: a noun left out and a particle moved before two sentences are joined ("Mia has 14 marbles and
# gives 5 away."). The held-out rules share none of the taught ones.
TAUGHT = Rephrasing(
    "taught", (leave_the_noun_implicit, move_the_particle, use_a_synonym, join_with_and, ask_another_way)
)
HELD_OUT = Rephrasing("held-out", (use_an_unseen_synonym, join_with_and_then, ask_yet_another_way), 0.7)
REPHRASINGS = {r.name: r for r in (TAUGHT, HELD_OUT)}


def rephrasing(name: str) -> Rephrasing:
    try:
        return REPHRASINGS[name]
    except KeyError:
        raise ValueError(f"rephrasing must be one of {', '.join(REPHRASINGS)}, not {name!r}") from None


def mixed(problems: Sequence[CurriculumProblem], fraction: float, seed: int) -> list[CurriculumProblem]:
    """The problems with about `fraction` of them rephrased by the ``TAUGHT`` rules (chosen by `seed`)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the rephrased fraction must be in [0, 1], not {fraction}")
    rng = random.Random(f"thinkmesh-rephrase-mix/{seed}")
    return [TAUGHT.problem(p) if rng.random() < fraction else p for p in problems]


def teacher_problems(level: int, n: int, seed: int, rephrased: float) -> list[CurriculumProblem]:
    """`generate(level, n, seed)` with about `rephrased` of the problems said another way: what the models learn
    from (the bootstrap, the rounds' replay). Searches and evaluations read the curriculum as it is generated."""
    return mixed(generate(level, n, seed=seed), rephrased, seed)
