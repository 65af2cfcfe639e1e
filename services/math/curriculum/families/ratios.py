"""Fractions and ratios: a fraction of a quantity, what fraction a part is, sharing in a ratio."""

from __future__ import annotations

from fractions import Fraction

from services.math.curriculum.draft import Draft, Op, Solved, Voice, story_voice
from services.math.curriculum.family import Family, Template
from services.math.curriculum.words import BAKED, COLOURS, FRUIT, SMALL_THINGS

FRACTION_IMPORT = "from fractions import Fraction"


def _fraction(d: Draft) -> tuple[int, int]:
    denominator = d.number(2, min(8, d.spec.max_factor + 3))
    return d.number(1, denominator - 1), denominator


def _two_colours(d: Draft) -> tuple[str, str]:
    first = d.pick(COLOURS)
    return first, d.pick([c for c in COLOURS if c != first])


def _owned(d: Draft) -> tuple[Voice, str]:
    return story_voice(d.pick(("gets", "buys", "finds")), d.pick(("gives away", "loses"))), d.pick(SMALL_THINGS + FRUIT)


def part_of(d: Draft, chain: int) -> Solved:
    who, (voice, noun), colour = d.person(), _owned(d), d.pick(COLOURS)
    a, b = _fraction(d)
    end = d.multiple(b, 2 * b, d.spec.max_value)
    total = d.stock(chain, end, who=who, voice=voice, noun=noun, intro="{name} has {start} {noun}.")
    d.say(f"{a}/{b} of {who.his} {noun} are {colour}.")
    d.step(f"{a}/{b} of the {noun} are {colour}", f"{colour} = {total} * {a} // {b}")
    return Solved(f"How many {colour} {noun} does {who.name} have?", colour, end * a // b)


def give_part(d: Draft, chain: int) -> Solved:
    who, other, (voice, noun) = d.person(), d.other(), _owned(d)
    a, b = _fraction(d)
    end = d.multiple(b, 2 * b, d.spec.max_value)
    total = d.stock(chain, end, who=who, voice=voice, noun=noun, intro="{name} has {start} {noun}.")
    d.say(f"{who.He} gives {a}/{b} of {who.his} {noun} to {other.name}.")
    d.step(f"{a}/{b} of the {noun} are given away", f"given = {total} * {a} // {b}")
    d.step(f"{noun} left", f"left = {total} - given")
    return Solved(f"How many {noun} does {who.name} have left?", "left", end - end * a // b)


def what_fraction(d: Draft, chain: int) -> Solved:
    who, (voice, noun), colour = d.person(), _owned(d), d.pick(COLOURS)
    end = d.number(3, d.spec.max_value)
    total = d.stock(chain, end, who=who, voice=voice, noun=noun, intro="{name} has {start} {noun}.")
    part = d.number(1, end - 1)
    d.say(f"{part} of {who.his} {noun} are {colour}.")
    d.step(f"{colour} {noun} out of all {noun}", f"fraction = Fraction({part}, {total})", needs=FRACTION_IMPORT)
    return Solved(f"What fraction of {who.his} {noun} are {colour}?", "fraction", Fraction(part, end))


def ratio(d: Draft, chain: int) -> Solved:
    who, (voice, noun) = d.person(), _owned(d)
    first, second = _two_colours(d)
    a, b = d.number(1, 5), d.number(1, 5)
    parts = a + b
    end = d.multiple(parts, 2 * parts, d.spec.max_value)
    total = d.stock(chain, end, who=who, voice=voice, noun=noun, intro="{name} has {start} {noun}.")
    d.say(f"{who.His} {first} and {second} {noun} are in the ratio {a}:{b}.")
    d.step(f"one part of the ratio {a}:{b}", f"part = {total} // ({a} + {b})")
    d.step(f"{second} {noun} are {b} parts", f"{second} = part * {b}")
    return Solved(f"How many {second} {noun} does {who.name} have?", second, end // parts * b)


# Planning a bake: the count changes by deciding on more or fewer, never by sharing out.
_PLANS = Voice(
    clauses={
        Op.ADD: ("{He} plans {k} more {noun}.", "Then {he} adds {k} more {noun} to the plan."),
        Op.SUB: ("{He} plans {k} fewer {noun}.", "Then {he} takes {k} {noun} off the plan."),
        Op.MUL: ("{He} plans {k} times as many {noun}.", "Then {he} decides on {k} times as many {noun}."),
    },
    comments={Op.ADD: "{k} more {noun}", Op.SUB: "{k} fewer {noun}", Op.MUL: "{k} times as many {noun}"},
)


def recipe(d: Draft, chain: int) -> Solved:
    who, noun = d.person(), d.pick(BAKED)
    a, b = _fraction(d)
    end = d.number(2, min(d.spec.max_value, 60))
    total = d.stock(chain, end, who=who, voice=_PLANS, noun=noun, intro="{name} plans to bake {start} {noun}.")
    d.say(f"Each of the {noun} needs {a}/{b} cup of sugar.")
    d.step(f"{a}/{b} cup for each of the {noun}", f"sugar = {total} * Fraction({a}, {b})", needs=FRACTION_IMPORT)
    return Solved(f"How many cups of sugar does {who.name} need?", "sugar", end * Fraction(a, b))


RATIOS = Family(
    "ratios",
    "fractions and ratios: a fraction of a quantity, what fraction a part is, sharing in a ratio",
    (
        Template("part_of", 1, part_of),
        Template("give_part", 2, give_part),
        Template("what_fraction", 1, what_fraction),
        Template("ratio", 2, ratio),
        Template("recipe", 1, recipe),
    ),
)
