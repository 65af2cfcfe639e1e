"""Systems of two linear equations, solved with sympy: two unknowns, a total count and a total value."""

from __future__ import annotations

from services.math.curriculum.draft import Draft, Op, Person, Solved, Voice, story_voice
from services.math.curriculum.family import Family, Template
from services.math.curriculum.words import FRUIT, SMALL_THINGS

SYMPY_IMPORT = "from sympy import symbols, Eq, solve"


def _two_unknowns(
    d: Draft,
    chain: int,
    *,
    who: Person,
    voice: Voice,
    noun: str,
    var: str,
    intro: str,
    meaning: str,
    second: str,
    value_eq: str,
    ask_x: bool,
    x: int,
    y: int,
) -> str:
    """The shared shape: a total (changed `chain` times) and one more equation; returns the count expr.

    The final print step reads the unknown asked for: `print(sol[x])`.
    """
    total = d.stock(chain, x + y, who=who, voice=voice, noun=noun, var=var, intro=intro, high=d.spec.max_value + x + y)
    d.step(meaning, "x, y = symbols('x y')", needs=SYMPY_IMPORT)
    d.step(f"the total and {second}", f"sol = solve([Eq(x + y, {total}), {value_eq}], [x, y])")
    return total


def _count(d: Draft) -> int:
    """How many of one unknown: small at level 1 so that every number in the question has 1-2 digits."""
    return d.number(1, 4 + 3 * d.spec.level)


def _asked(ask_x: bool) -> str:
    return "sol[x]" if ask_x else "sol[y]"


def tickets(d: Draft, chain: int) -> Solved:
    who = d.person()
    x, y = _count(d), _count(d)
    a = d.number(3, 4 + 2 * d.spec.level)
    c = d.number(2, a - 1)
    ask_x = d.rng.random() < 0.5
    _two_unknowns(
        d,
        chain,
        who=who,
        voice=story_voice("buys", "returns"),
        noun="tickets",
        var="tickets",
        intro="{name} buys {start} tickets.",
        meaning="x adult tickets and y child tickets",
        second="the total cost",
        value_eq=f"Eq({a} * x + {c} * y, {a * x + c * y})",
        ask_x=ask_x,
        x=x,
        y=y,
    )
    d.say(f"Adult tickets cost {a} dollars and child tickets cost {c} dollars.")
    d.say(f"{who.He} pays {a * x + c * y} dollars in all.")
    kind = "adult" if ask_x else "child"
    return Solved(f"How many {kind} tickets does {who.name} have?", _asked(ask_x), x if ask_x else y)


def coins(d: Draft, chain: int) -> Solved:
    who = d.person()
    coins = ((1, 2), (1, 5), (2, 5)) + (((5, 10), (10, 20), (10, 25), (5, 20)) if d.spec.level >= 3 else ())
    small, big = d.pick(coins)
    x, y = _count(d), _count(d)
    ask_x = d.rng.random() < 0.5
    worth = small * x + big * y
    _two_unknowns(
        d,
        chain,
        who=who,
        voice=story_voice("finds", "spends"),
        noun="coins",
        var="coins",
        intro="{name} has {start} coins.",
        meaning=f"x {small}-cent coins and y {big}-cent coins",
        second="the total worth",
        value_eq=f"Eq({small} * x + {big} * y, {worth})",
        ask_x=ask_x,
        x=x,
        y=y,
    )
    d.say(f"All the coins are {small}-cent and {big}-cent coins, worth {worth} cents in total.")
    return Solved(
        f"How many {small if ask_x else big}-cent coins does {who.name} have?", _asked(ask_x), x if ask_x else y
    )


def animals(d: Draft, chain: int) -> Solved:
    who = d.person()
    x, y = _count(d), _count(d)
    ask_x = d.rng.random() < 0.5
    legs = 2 * x + 4 * y
    _two_unknowns(
        d,
        chain,
        who=who,
        voice=story_voice("buys", "sells"),
        noun="animals",
        var="animals",
        intro="{name} has {start} animals, all chickens and cows.",
        meaning="x chickens and y cows",
        second="the legs",
        value_eq=f"Eq(2 * x + 4 * y, {legs})",
        ask_x=ask_x,
        x=x,
        y=y,
    )
    d.say(f"The animals have {legs} legs in total.")
    return Solved(f"How many {'chickens' if ask_x else 'cows'} does {who.name} have?", _asked(ask_x), x if ask_x else y)


def fruit_basket(d: Draft, chain: int) -> Solved:
    who = d.person()
    first = d.pick(FRUIT)
    second = d.pick([f for f in FRUIT if f != first])
    x, y = _count(d), _count(d)
    high = 2 + 2 * d.spec.level
    a = d.number(2, high)
    c = d.pick([price for price in range(2, high + 1) if price != a])
    ask_x = d.rng.random() < 0.5
    cost = a * x + c * y
    _two_unknowns(
        d,
        chain,
        who=who,
        voice=story_voice("buys", "gives away"),
        noun="fruits",
        var="fruits",
        intro=f"{{name}} buys {{start}} fruits, all {first} and {second}.",
        meaning=f"x {first} and y {second}",
        second="the total cost",
        value_eq=f"Eq({a} * x + {c} * y, {cost})",
        ask_x=ask_x,
        x=x,
        y=y,
    )
    d.say(f"The {first} cost {a} dollars each and the {second} {c} dollars each.")
    d.say(f"{who.He} pays {cost} dollars.")
    return Solved(f"How many {first if ask_x else second} does {who.name} have?", _asked(ask_x), x if ask_x else y)


# Two people who share a collection: "they" find and lose things together.
_THEY = Voice(
    clauses={
        Op.ADD: ("They find {k} more {noun}.", "Then they get {k} more {noun}."),
        Op.SUB: ("They lose {k} {noun}.", "Then they give away {k} {noun}."),
        Op.MUL: ("Then they end up with {k} times as many {noun}.",),
        Op.DIV: ("They keep only 1/{k} of the {noun}.",),
    },
    comments={
        Op.ADD: "{k} more {noun}",
        Op.SUB: "{k} fewer {noun}",
        Op.MUL: "{k} times as many {noun}",
        Op.DIV: "1/{k} of the {noun}",
    },
)


def sum_and_difference(d: Draft, chain: int) -> Solved:
    first, second = d.other(), d.other()
    noun = d.pick(SMALL_THINGS)
    y = d.number(1, 10 + 5 * d.spec.level)
    difference = d.number(1, 10 + 5 * d.spec.level)
    x = y + difference
    ask_x = d.rng.random() < 0.5
    they = Person(f"{first.name} and {second.name}", "they", "their")
    _two_unknowns(
        d,
        chain,
        who=they,
        voice=_THEY,
        noun=noun,
        var=noun,
        intro="{name} have {start} " + noun + " together.",
        meaning=f"x is {first.name}'s and y is {second.name}'s",
        second="the difference",
        value_eq=f"Eq(x - y, {difference})",
        ask_x=ask_x,
        x=x,
        y=y,
    )
    d.say(f"{first.name} has {difference} more {noun} than {second.name}.")
    return Solved(f"How many {noun} does {(first if ask_x else second).name} have?", _asked(ask_x), x if ask_x else y)


SYSTEMS = Family(
    "systems",
    "systems of two linear equations (solved with sympy): a total count and a total value",
    tuple(Template(build.__name__, 2, build) for build in (tickets, coins, animals, fruit_basket, sum_and_difference)),
)
