"""Remainders, gcd and lcm: packing into groups, what is left over, identical groups, repeating cycles."""

from __future__ import annotations

from services.math.curriculum.draft import Draft, Solved, story_voice
from services.math.curriculum.family import Family, Template
from services.math.curriculum.words import BAKED, COLOURS, FRUIT, SMALL_THINGS


def _not_multiple(d: Draft, size: int, low: int) -> int:
    value = d.number(max(low, size + 1), d.spec.max_value)
    return value if value % size else value + 1


def leftover(d: Draft, chain: int) -> Solved:
    who, noun, size = d.person(), d.pick(SMALL_THINGS + FRUIT), d.number(3, 9)
    end = _not_multiple(d, size, 2)
    total = d.stock(
        chain, end, who=who, voice=story_voice("gets", "gives away"), noun=noun, intro="{name} has {start} {noun}."
    )
    d.say(f"{who.He} packs the {noun} into bags of {size}.")
    d.step(f"{noun} left after filling bags of {size}", f"left = {total} % {size}")
    return Solved(f"How many {noun} are left over?", "left", end % size)


def full_boxes(d: Draft, chain: int) -> Solved:
    who, noun, size = d.person(), d.pick(BAKED), d.number(2, 12)
    end = d.number(size, d.spec.max_value)
    total = d.stock(
        chain, end, who=who, voice=story_voice("bakes", "sells"), noun=noun, intro="{name} has {start} {noun}."
    )
    d.say(f"{who.He} puts the {noun} into boxes of {size}.")
    d.step(f"full boxes of {size}", f"boxes = {total} // {size}")
    return Solved("How many boxes can be filled completely?", "boxes", end // size)


def need_more(d: Draft, chain: int) -> Solved:
    who, noun, size = d.person(), d.pick(SMALL_THINGS), d.number(3, 10)
    end = _not_multiple(d, size, 2)
    total = d.stock(
        chain, end, who=who, voice=story_voice("finds", "loses"), noun=noun, intro="{name} has {start} {noun}."
    )
    d.say(f"{who.He} wants to put all the {noun} in rows of {size}.")
    d.step(f"{noun} in the last, unfinished row", f"left = {total} % {size}")
    d.step("how many more fill that row", f"need = {size} - left")
    return Solved(f"How many more {noun} does {who.he} need to fill the last row?", "need", size - end % size)


def gift_bags(d: Draft, chain: int) -> Solved:
    who, noun = d.person(), d.pick(("beads", "candies", "stickers", "marbles", "buttons", "balloons"))
    first = d.pick(COLOURS)
    second = d.pick([c for c in COLOURS if c != first])
    bags = d.number(2, 12)
    m1, m2 = _coprime_pair(d, max(2, d.spec.max_value // bags))
    end = bags * m1
    total = d.stock(
        chain,
        end,
        who=who,
        voice=story_voice("buys", "gives away"),
        noun=f"{first} {noun}",
        var=first,
        intro="{name} has {start} {noun} and " + f"{bags * m2} {second} {noun}.",
    )
    d.say(f"{who.He} packs all of them into identical gift bags with none left.")
    d.step("largest number of identical bags", f"bags = gcd({total}, {bags * m2})", needs="from math import gcd")
    return Solved(f"At most how many gift bags can {who.he} make?", "bags", bags)


def _coprime_pair(d: Draft, high: int) -> tuple[int, int]:
    while True:
        a, b = d.number(1, high), d.number(1, high)
        if a != b and _gcd(a, b) == 1:
            return a, b


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def cycles(d: Draft, chain: int) -> Solved:
    who = d.person()
    first, second = d.pick(
        (
            ("swims", "runs"),
            ("bakes bread", "makes soup"),
            ("visits the library", "visits the zoo"),
            ("waters the plants", "cleans the room"),
        )
    )
    a = d.number(2, 4 + 2 * d.spec.level)
    b = d.number(2, 4 + 2 * d.spec.level)
    while b == a:
        b = d.number(2, 4 + 2 * d.spec.level)
    d.say(f"{who.name} {first} every {a} days and {second} every {b} days. {who.He} did both today.")
    d.step("both happen again after the least common multiple", f"days = lcm({a}, {b})", needs="from math import lcm")
    return Solved(f"In how many days will {who.he} next do both on the same day?", "days", a * b // _gcd(a, b))


NUMBER_THEORY = Family(
    "number_theory",
    "remainders, whole groups, gcd (identical groups) and lcm (repeating cycles)",
    (
        Template("leftover", 1, leftover),
        Template("full_boxes", 1, full_boxes),
        Template("need_more", 2, need_more),
        Template("gift_bags", 1, gift_bags),
        Template("cycles", 1, cycles, max_chain=0),
    ),
)
