"""Simple counting: pairing choices (products), handshakes and groups (combinations), orders (factorials)."""

from __future__ import annotations

from services.math.curriculum.draft import Draft, Op, Person, Solved, group_voice, story_voice
from services.math.curriculum.family import Family, Template
from services.math.curriculum.words import TOYS

_CLOTHES = (
    ("shirts", "skirts", "shirt", "skirt"),
    ("hats", "scarves", "hat", "scarf"),
    ("jackets", "caps", "jacket", "cap"),
    ("tops", "jeans", "top", "pair of jeans"),
    ("sweaters", "shorts", "sweater", "pair of shorts"),
)
_MEALS = (("drinks", "sandwiches", "desserts"), ("soups", "salads", "cakes"), ("juices", "wraps", "fruits"))


def _comb(n: int, k: int) -> int:
    result = 1
    for i in range(k):
        result = result * (n - i) // (i + 1)
    return result


def outfits(d: Draft, chain: int) -> Solved:
    who = d.person()
    first, second, one, other = d.pick(_CLOTHES)
    count = d.number(2, 9 + d.spec.level)
    end = d.number(2, min(d.spec.max_value, 30))
    total = d.stock(
        chain,
        end,
        who=who,
        voice=story_voice("buys", "gives away", ops=(Op.ADD, Op.SUB, Op.MUL)),
        noun=first,
        intro="{name} has {start} {noun} and " + f"{count} {second}.",
    )
    d.step(f"each of the {first} goes with each of the {second}", f"outfits = {total} * {count}")
    return Solved(f"How many outfits of one {one} and one {other} can {who.name} make?", "outfits", end * count)


def handshakes(d: Draft, chain: int) -> Solved:
    end = d.number(3, min(d.spec.max_value, 40))
    room = Person("the party", "it", "its")
    total = d.stock(
        chain,
        end,
        who=room,
        voice=group_voice("arrive", "leave"),
        noun="people",
        intro="There are {start} people at a party.",
        high=60,
    )
    d.say("Each person shakes hands once with every other person.")
    d.step("one handshake for every pair of people", f"handshakes = comb({total}, 2)", needs="from math import comb")
    return Solved("How many handshakes are there?", "handshakes", _comb(end, 2))


def teams(d: Draft, chain: int) -> Solved:
    who, size = d.person(), d.number(2, 3)
    end = d.number(size + 1, 20)
    total = d.stock(
        chain,
        end,
        who=who,
        voice=story_voice("makes", "loses touch with", ops=(Op.ADD, Op.SUB)),
        noun="friends",
        intro="{name} has {start} friends.",
        high=30,
    )
    d.say(f"{who.He} invites {size} of {who.his} friends to a game.")
    d.step(
        f"groups of {size} friends, order does not matter",
        f"groups = comb({total}, {size})",
        needs="from math import comb",
    )
    return Solved(f"How many different groups of {size} can {who.he} invite?", "groups", _comb(end, size))


def orders(d: Draft, chain: int) -> Solved:
    who, noun = d.person(), d.pick((*TOYS, "books", "photos", "plants"))
    end = d.number(2, 7)
    total = d.stock(
        chain,
        end,
        who=who,
        voice=story_voice("gets", "gives away", ops=(Op.ADD, Op.SUB)),
        noun=noun,
        intro="{name} has {start} {noun}.",
        high=12,
    )
    d.say(f"{who.He} puts all the {noun} in a row on a shelf.")
    d.step(f"orders of the {noun} in a row", f"orders = factorial({total})", needs="from math import factorial")
    value = 1
    for i in range(2, end + 1):
        value *= i
    return Solved(f"In how many different orders can {who.he} line them up?", "orders", value)


def meals(d: Draft, chain: int) -> Solved:
    who = d.person()
    first, second, third = d.pick(_MEALS)
    b, c = d.number(2, 6 + d.spec.level), d.number(2, 6 + d.spec.level)
    end = d.number(2, min(d.spec.max_value, 20))
    total = d.stock(
        chain,
        end,
        who=who,
        voice=story_voice("adds", "removes", ops=(Op.ADD, Op.SUB, Op.MUL)),
        noun=first,
        intro="{name}'s cafe sells {start} {noun}, " + f"{b} {second} and {c} {third}.",
        high=40,
    )
    d.step(f"pairs of {first} and {second}", f"meals = {total} * {b}")
    d.step(f"each pair with one of the {third}", f"meals = meals * {c}")
    return Solved(f"How many meals of one of each can {who.name} offer?", "meals", end * b * c)


COUNTING = Family(
    "counting",
    "simple counting: products of choices, handshakes and groups (combinations), orders (factorials)",
    (
        Template("outfits", 1, outfits),
        Template("handshakes", 1, handshakes),
        Template("teams", 1, teams),
        Template("orders", 1, orders),
        Template("meals", 2, meals),
    ),
)
