"""Linear equations in one unknown: a start value went through known changes; find it by undoing them.

The changes are told forwards, as in the arithmetic stories; the teacher undoes them one step each, last
change first.
"""

from __future__ import annotations

from services.math.curriculum.draft import ABSTRACT, Draft, Person, Solved, Voice, group_voice, story_voice
from services.math.curriculum.family import Family, Template
from services.math.curriculum.words import SMALL_THINGS, TOYS


def _unknown(
    d: Draft, chain: int, who: Person, voice: Voice, noun: str, var: str, opening: str, result: str, question: str
) -> Solved:
    end = d.number(2, d.spec.max_value)
    start, changes = d.plan(chain, end, ops=voice.ops)
    d.say(opening)
    for change in changes:
        d.say(voice.clause(d.rng, change, who, noun))
    d.say(result.format(end=end))
    d.undo(voice, noun, var, end, changes)
    return Solved(question, var, start)


def think_of_a_number(d: Draft, chain: int) -> Solved:
    who = d.person()
    return _unknown(
        d,
        chain,
        who,
        ABSTRACT,
        "",
        "n",
        f"{who.name} thinks of a number.",
        "The result is {end}.",
        f"What number did {who.name} think of?",
    )


def number_machine(d: Draft, chain: int) -> Solved:
    machine = Person("the machine", "it", "its")
    return _unknown(
        d,
        chain,
        machine,
        ABSTRACT,
        "",
        "n",
        "A number goes into a machine.",
        "The machine gives out {end}.",
        "What number went into the machine?",
    )


def had_at_first(d: Draft, chain: int) -> Solved:
    who, noun = d.person(), d.pick(SMALL_THINGS + TOYS)
    voice = story_voice(d.pick(("gets", "finds", "buys")), d.pick(("gives away", "loses", "sells")))
    return _unknown(
        d,
        chain,
        who,
        voice,
        noun,
        noun,
        f"{who.name} has some {noun}.",
        f"Now {who.he} has {{end}} {noun}.",
        f"How many {noun} did {who.name} have at first?",
    )


def money_at_first(d: Draft, chain: int) -> Solved:
    who = d.person()
    return _unknown(
        d,
        chain,
        who,
        story_voice("earns", "spends"),
        "dollars",
        "dollars",
        f"{who.name} has some money.",
        f"In the end {who.he} has {{end}} dollars.",
        f"How many dollars did {who.name} have at the start?",
    )


def bus_at_start(d: Draft, chain: int) -> Solved:
    bus = Person("the bus", "it", "its")
    return _unknown(
        d,
        chain,
        bus,
        group_voice("get on", "get off"),
        "people",
        "people",
        "Some people are on a bus.",
        "Now there are {end} people on the bus.",
        "How many people were on the bus at the start?",
    )


LINEAR = Family(
    "linear",
    "linear equations in one unknown: undo known changes to find the start value",
    tuple(
        Template(build.__name__, 0, build, min_chain=1)
        for build in (think_of_a_number, number_machine, had_at_first, money_at_first, bus_at_start)
    ),
)
