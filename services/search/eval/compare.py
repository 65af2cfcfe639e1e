"""`thinkmesh compare`: is one evaluation really better than another on the same problems?

Two methods run on the same problems (`thinkmesh eval … --results FILE`) differ only where one is right and the
other wrong. On small models the accuracies differ by a few problems in hundreds, so the question is whether
those discordant problems lean one way more than chance would: the exact McNemar test, i.e. a two-sided sign
test on the discordant problems (under the null hypothesis each goes either way with probability 1/2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from math import comb
from pathlib import Path


@dataclass(frozen=True)
class Comparison:
    n: int  # problems in both evaluations
    accuracy_a: float
    accuracy_b: float
    only_a: int  # right in A, wrong in B
    only_b: int  # right in B, wrong in A
    p_value: float  # exact two-sided McNemar test
    unmatched: int  # problems in only one of the two evaluations (left out)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial test of `wins` against `losses` at p = 1/2 (ties are not counted)."""
    if wins < 0 or losses < 0:
        raise ValueError("counts must be >= 0")
    trials = wins + losses
    if trials == 0:
        return 1.0
    tail = sum(comb(trials, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / (1 << trials))


def compare(a: Mapping[str, bool], b: Mapping[str, bool]) -> Comparison:
    """Compares two evaluations given as problem id → correct."""
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise ValueError("the two evaluations have no problem in common")
    only_a = sum(a[i] and not b[i] for i in shared)
    only_b = sum(b[i] and not a[i] for i in shared)
    return Comparison(
        n=len(shared),
        accuracy_a=sum(a[i] for i in shared) / len(shared),
        accuracy_b=sum(b[i] for i in shared) / len(shared),
        only_a=only_a,
        only_b=only_b,
        p_value=sign_test(only_a, only_b),
        unmatched=len(a.keys() ^ b.keys()),
    )


def read_results(paths: Iterable[Path]) -> dict[str, bool]:
    """Problem id → correct from one or more `--results` files (several files pool, e.g. one per level)."""
    verdicts: dict[str, bool] = {}
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem, correct = str(row["id"]), row["correct"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a result row ({error})") from None
            if not isinstance(correct, bool):
                raise ValueError(f"{path}:{number}: 'correct' must be true or false")
            if problem in verdicts:
                raise ValueError(
                    f"{path}:{number}: problem {problem} appears twice (a --sweep file holds one row per rollout "
                    "count; compare evaluations of one count)"
                )
            verdicts[problem] = correct
    return verdicts
