"""Multi-step arithmetic stories: a quantity changes by adding, taking away, multiplying and sharing.

Every change here is the move that the other families add at higher levels.
"""

from __future__ import annotations

from services.math.curriculum.draft import ABSTRACT, Draft, Person, Solved, Voice, group_voice, story_voice
from services.math.curriculum.family import Family, Template
from services.math.curriculum.words import BAKED, FRUIT, GARDEN, SMALL_THINGS, TOYS


def _owned(d: Draft, chain: int, voice: Voice, noun: str, intro: str, question: str) -> Solved:
    who = d.person()
    end = d.number(2, d.spec.max_value)
    start, changes = d.plan(chain, end)
    d.say(intro.format(start=start, noun=noun, **who.fields()))
    d.tell(voice, who, noun, noun, start, changes)
    return Solved(question.format(noun=noun, **who.fields()), noun, end)


def fruit(d: Draft, chain: int) -> Solved:
    voice = story_voice(d.pick(("picks", "buys")), d.pick(("eats", "gives away", "sells")))
    return _owned(d, chain, voice, d.pick(FRUIT), "{name} has {start} {noun}.", "How many {noun} does {name} have now?")


def collection(d: Draft, chain: int) -> Solved:
    gain, lose = d.pick((("gets", "gives away"), ("finds", "loses"), ("buys", "sells"), ("wins", "trades away")))
    return _owned(
        d,
        chain,
        story_voice(gain, lose),
        d.pick(SMALL_THINGS),
        d.pick(("{name} has {start} {noun}.", "{name} collects {noun} and has {start}.")),
        d.pick(("How many {noun} does {name} have in the end?", "How many {noun} does {he} have now?")),
    )


def bakery(d: Draft, chain: int) -> Solved:
    return _owned(
        d,
        chain,
        story_voice("bakes", "sells"),
        d.pick(BAKED),
        "{name} has {start} {noun} at {his} stall.",
        "How many {noun} does {name} have at the end?",
    )


def toys(d: Draft, chain: int) -> Solved:
    voice = story_voice(d.pick(("gets", "buys")), d.pick(("gives away", "loses")))
    return _owned(
        d,
        chain,
        voice,
        d.pick(TOYS),
        "There are {start} {noun} in {name}'s room.",
        "How many {noun} are in {name}'s room now?",
    )


def garden(d: Draft, chain: int) -> Solved:
    return _owned(
        d,
        chain,
        story_voice("plants", "picks"),
        d.pick(GARDEN),
        "{name} has {start} {noun} in {his} garden.",
        "How many {noun} are in the garden now?",
    )


def number_machine(d: Draft, chain: int) -> Solved:
    who = d.person()
    end = d.number(2, d.spec.max_value)
    start, changes = d.plan(chain, end)
    d.say(f"{who.name} starts with the number {start}.")
    d.tell(ABSTRACT, who, "", "n", start, changes)
    return Solved(f"What number does {who.name} end up with?", "n", end)


def bus(d: Draft, chain: int) -> Solved:
    voice = group_voice("get on", "get off")
    end = d.number(2, d.spec.max_value)
    start, changes = d.plan(chain, end)
    d.say(f"There are {start} people on a bus.")
    d.tell(voice, Person("the bus", "it", "its"), "people", "people", start, changes)
    return Solved("How many people are on the bus now?", "people", end)


ARITHMETIC = Family(
    "arithmetic",
    "multi-step stories: a quantity gains, loses, multiplies and is shared out",
    tuple(
        Template(build.__name__, 0, build, min_chain=1)
        for build in (fruit, collection, bakery, toys, garden, number_machine, bus)
    ),
)
