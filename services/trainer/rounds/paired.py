"""A round's models against an earlier round's, problem by problem.

Each round's evaluation writes every held-out problem's result (`rounds/<n>/eval/<method>.jsonl`); the held-out
problems are the same in every round (a fixed seed), so two rounds differ only where one is right and the other
wrong. `paired` counts those problems per level and pooled and gives the exact McNemar test on them (the test
`thinkmesh compare` does): a rise of a few problems in hundreds is told apart from chance.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.search.eval.compare import compare, read_results

METHODS = ("greedy", "mcts")  # the methods every problem is evaluated with (the sampled ones run on a subset)
_LEVEL = re.compile(r"-L(\d+)-")


@dataclass(frozen=True)
class Paired:
    n: int
    before: float  # accuracy of the earlier round's models on these problems
    after: float
    gained: int  # right now, wrong before
    lost: int  # wrong now, right before
    p: float  # exact two-sided McNemar test


def _level(problem_id: str) -> str | None:
    found = _LEVEL.search(problem_id)
    return f"L{found.group(1)}" if found else None


def paired(before: Path, after: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """method → "all" and each level ("L3", …) → a Paired's fields, for the methods both directories hold; levels
    come from the curriculum's problem ids (other datasets are compared pooled only)."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for method in METHODS:
        files = (before / f"{method}.jsonl", after / f"{method}.jsonl")
        if not all(f.is_file() for f in files):
            continue
        old, new = (read_results([f]) for f in files)
        groups: dict[str, list[str]] = {"all": sorted(old.keys() & new.keys())}
        for problem in groups["all"]:
            level = _level(problem)
            if level is not None:
                groups.setdefault(level, []).append(problem)
        if not groups["all"]:
            continue
        result[method] = {}
        for name, ids in sorted(groups.items()):
            c = compare({i: new[i] for i in ids}, {i: old[i] for i in ids})
            result[method][name] = asdict(
                Paired(c.n, round(c.accuracy_b, 4), round(c.accuracy_a, 4), c.only_a, c.only_b, round(c.p_value, 4))
            )
    return result


def summary(comparison: dict[str, dict[str, dict[str, Any]]], method: str, group: str = "all") -> str:
    """ "+12 −5 (p 0.14)" for a report's cell; "–" when not compared."""
    cell = comparison.get(method, {}).get(group)
    if cell is None:
        return "–"
    return f"+{cell['gained']} −{cell['lost']} (p {cell['p']:.2g})"
