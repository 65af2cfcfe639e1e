"""Choosing the final answer from one or more finished search trees.

- "ppm": the answer of the best terminal by the PPM's score (the paper's rule for one search).
- "vote": a score-weighted vote over all terminal answers: each answer collects (1 + score)/2 from every
  terminal that reached it, so many agreeing trajectories beat one lucky high score.
- "q": the answer of the terminal with the highest mean Q along its path.
- "majority": the most frequent terminal answer, every trajectory one vote (self-consistency).
- "confidence" (the default): the answer of the terminal whose path the policy itself found likeliest, by the
  mean log-probability of the tokens it generated (program outputs are not the policy's and do not count).
Across several searches of one problem the terminals of all trees are pooled (the paper's 64 trajectories).
Answers are compared after a light normalisation; the grader decides equality against references, not here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.math import stepfmt
from services.search.engine.mcts import Node, Tree

Method = Literal["ppm", "vote", "q", "majority", "confidence"]
METHODS: tuple[Method, ...] = ("confidence", "vote", "ppm", "q", "majority")
# The default: with PPMs of this project's size it picks right answers from the same trees more often than the
# PPM-based rules (docs/results.md, "Choosing MCTS's answer"). Where the policy reports no log-probabilities
# every path ties and the PPM's score decides, as in the paper.
DEFAULT_METHOD: Method = "confidence"


@dataclass(frozen=True)
class Choice:
    answer: str
    score: float
    tree: int  # index of the tree the trajectory comes from
    node: int
    solution: str  # the trajectory in the step format


def _key(answer: str) -> str:
    return "".join(answer.split()).rstrip(".").replace("\\dfrac", "\\frac")


def _mean_q(tree: Tree, node: Node) -> float:
    path = tree.path(node.id)
    values = [tree.nodes[n].q(tree.config.q_mode) for n in path]
    return sum(values) / len(values) if values else 0.0


def mean_logprob(tree: Tree, node: Node) -> float:
    """The policy's mean log-probability per generated token along the path to `node` (0 if none recorded)."""
    path = [tree.nodes[n] for n in tree.path(node.id)]
    tokens = sum(n.tokens for n in path)
    return sum(n.logprob for n in path) / tokens if tokens else 0.0


def choose(trees: Sequence[Tree], method: Method = DEFAULT_METHOD) -> Choice | None:
    pool = [(index, tree, node) for index, tree in enumerate(trees) for node in tree.terminals()]
    if not pool:
        return None

    def choice(index: int, tree: Tree, node: Node, score: float) -> Choice:
        solution = stepfmt.render_solution(tree.steps_of(node.id))
        return Choice(node.answer or "", score, index, node.id, solution)

    if method == "ppm":
        index, tree, node = max(pool, key=lambda item: (item[2].ppm_score, -item[0], -item[2].id))
        return choice(index, tree, node, node.ppm_score)
    if method == "confidence":
        index, tree, node = max(
            pool, key=lambda item: (mean_logprob(item[1], item[2]), item[2].ppm_score, -item[0], -item[2].id)
        )
        # As a score: the geometric mean of the path's token probabilities, in (0, 1].
        return choice(index, tree, node, math.exp(mean_logprob(tree, node)))
    if method == "q":
        index, tree, node = max(pool, key=lambda item: (_mean_q(item[1], item[2]), -item[0], -item[2].id))
        return choice(index, tree, node, _mean_q(tree, node))
    totals: dict[str, float] = {}
    best_of: dict[str, tuple[int, Tree, Node]] = {}
    for index, tree, node in pool:
        key = _key(node.answer or "")
        totals[key] = totals.get(key, 0.0) + (1.0 if method == "majority" else (1.0 + node.ppm_score) / 2.0)
        if key not in best_of or node.ppm_score > best_of[key][2].ppm_score:
            best_of[key] = (index, tree, node)
    winner = max(totals, key=lambda k: (totals[k], best_of[k][2].ppm_score))
    index, tree, node = best_of[winner]
    return choice(index, tree, node, totals[winner] / len(pool))
