"""Percentages: a percent of a quantity, spending or solving a percent, growth, what percent a part is."""

from __future__ import annotations

from services.math.curriculum.draft import Draft, Op, Person, Solved, Voice, story_voice
from services.math.curriculum.family import Family, Template
from services.math.curriculum.words import COLOURS, FRUIT, GARDEN, SMALL_THINGS, TOYS


def _percent(d: Draft) -> int:
    return d.pick((10, 20, 25, 30, 40, 50, 60, 75, 80) if d.spec.level < 3 else tuple(range(5, 100, 5)))


def _end_for(d: Draft, percent: int, low: int = 2) -> int:
    """A quantity whose `percent` percent is a whole number."""
    step = 100 // _gcd(100, percent)
    return d.multiple(step, max(low, step), max(step, d.spec.max_value))


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def percent_of(d: Draft, chain: int) -> Solved:
    who, noun, colour, p = d.person(), d.pick(SMALL_THINGS + TOYS), d.pick(COLOURS), _percent(d)
    end = _end_for(d, p)
    total = d.stock(
        chain, end, who=who, voice=story_voice("gets", "gives away"), noun=noun, intro="{name} has {start} {noun}."
    )
    d.say(f"{p}% of {who.his} {noun} are {colour}.")
    d.step(f"{p}% of the {noun}", f"{colour} = {total} * {p} // 100")
    return Solved(f"How many {colour} {noun} does {who.name} have?", colour, end * p // 100)


def spend(d: Draft, chain: int) -> Solved:
    who, p = d.person(), _percent(d)
    end = _end_for(d, p)
    money = d.stock(
        chain, end, who=who, voice=story_voice("earns", "spends"), noun="dollars", intro="{name} has {start} dollars."
    )
    d.say(f"{who.He} spends {p}% of {who.his} money on a {d.pick(('book', 'game', 'gift', 'bike', 'lamp'))}.")
    d.step(f"{p}% of the dollars are spent", f"spent = {money} * {p} // 100")
    d.step("dollars left", f"left = {money} - spent")
    return Solved(f"How many dollars does {who.name} have left?", "left", end - end * p // 100)


def growth(d: Draft, chain: int) -> Solved:
    who, noun, p = d.person(), d.pick(GARDEN), _percent(d)
    end = _end_for(d, p)
    total = d.stock(
        chain,
        end,
        who=who,
        voice=story_voice("plants", "picks"),
        noun=noun,
        intro="{name} has {start} {noun} in {his} garden.",
    )
    d.say(f"Then the number of {noun} grows by {p}%.")
    d.step(f"{p}% more {noun}", f"extra = {total} * {p} // 100")
    d.step(f"{noun} after growing", f"{noun} = {total} + extra")
    return Solved(f"How many {noun} are in the garden now?", noun, end + end * p // 100)


def what_percent(d: Draft, chain: int) -> Solved:
    who, noun, colour, p = d.person(), d.pick(FRUIT + SMALL_THINGS), d.pick(COLOURS), _percent(d)
    end = _end_for(d, p)
    total = d.stock(
        chain, end, who=who, voice=story_voice("buys", "gives away"), noun=noun, intro="{name} has {start} {noun}."
    )
    part = end * p // 100
    d.say(f"{part} of {who.his} {noun} are {colour}.")
    d.step(f"{colour} {noun} as a percent of all {noun}", f"percent = {part} * 100 // {total}")
    return Solved(f"What percent of {who.his} {noun} are {colour}?", "percent", p)


# A price rises and falls on its own; only the shop changes it.
_PRICES = Voice(
    clauses={
        Op.ADD: ("The price goes up by {k} dollars.", "Then the price rises by {k} dollars."),
        Op.SUB: ("The price drops by {k} dollars.", "Then the price falls by {k} dollars."),
        Op.MUL: ("Then the price becomes {k} times as high.", "The price grows to {k} times as much."),
        Op.DIV: ("Then the price is divided by {k}.", "The shop divides the price by {k}."),
    },
    comments={
        Op.ADD: "{k} dollars more",
        Op.SUB: "{k} dollars less",
        Op.MUL: "{k} times the price",
        Op.DIV: "the price divided by {k}",
    },
)


def sale(d: Draft, chain: int) -> Solved:
    p = _percent(d)
    thing = d.pick(("coat", "bike", "lamp", "chair", "game", "watch", "tent", "radio", "desk", "guitar"))
    end = _end_for(d, p, low=10)
    shop = Person("the shop", "it", "its")  # no one to refer to: distractors name their own people
    price = d.stock(chain, end, who=shop, voice=_PRICES, noun="price", intro=f"A {thing} costs {{start}} dollars.")
    d.say(f"Now the {thing} is sold at {p}% off.")
    d.step(f"{p}% off the price", f"off = {price} * {p} // 100")
    d.step("price after the discount", f"sale = {price} - off")
    return Solved(f"What is the sale price of the {thing} in dollars?", "sale", end - end * p // 100)


PERCENTAGES = Family(
    "percentages",
    "percentages: a percent of a quantity, spending a percent, growth, discounts, what percent a part is",
    (
        Template("percent_of", 1, percent_of),
        Template("spend", 2, spend),
        Template("growth", 2, growth),
        Template("what_percent", 1, what_percent),
        Template("sale", 2, sale),
    ),
)
