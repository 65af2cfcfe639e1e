"""Training data from finished search trees, by the paper's rules, and one of ours.

SFT: per solved problem, the top-2 correct trajectories by mean Q along their path; any trajectory with a code
error on its path is dropped (a step that failed and was "fixed" later teaches the wrong habit).

Ours: a right answer reached by a program that uses a number neither the question states nor the sound
constants allow (`NumberRule`) is right by luck — "loses 70" written as `- 7` and later `+ 7` still lands on
the reference — and is not taught: not as an SFT trajectory, not as the right side of a PPM pair. On the
curriculum half the search's four-move solutions were of that kind (docs/results.md). `Extracted.dropped`
counts what each rule left out; `lone` counts the problems whose only right path is one the tree's others
failed to find (kept, reported: the paper's Q-values weigh them down only with enough rollouts).

PPM pairs: at every expanded node, among its children, the (up to) 2 with the highest Q that lead to a correct
answer are positives and the 2 with the lowest Q that lead to a wrong answer are negatives; they share the
prefix (the path to the node). A pair needs a Q margin (authors' code: 0.5). For the final step, whole
trajectories are compared: correct terminals against wrong ones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.math import stepfmt
from services.search.engine.mcts import Node, Tree
from services.trainer.data import StepPair, Trajectory

TOP_K = 2
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class NumberRule:
    """A sound program uses only numbers its question states (or earlier outputs printed) and `constants`: the
    numbers a right solution may need that no question says (the curriculum's percentages, 100; a chicken's and a
    cow's legs, 2 and 4). Real problems need unit conversions and the like: presets for them turn it off."""

    constants: frozenset[str] = frozenset({"2", "4", "100"})

    def foreign(self, question: str, steps: Sequence[str]) -> list[str]:
        """The numbers the steps' code uses that the question, earlier outputs and the constants do not give."""
        known = set(_NUMBER.findall(question)) | self.constants
        foreign: list[str] = []
        for step in steps:
            if step.startswith(stepfmt.OUTPUT_START):
                known |= set(_NUMBER.findall(step))
                continue
            if step.startswith(stepfmt.ANSWER_START):
                continue
            code = "\n".join(line.split("#", 1)[0] for line in step.splitlines())
            foreign += [n for n in _NUMBER.findall(code) if _canonical(n) not in known and n not in known]
        return foreign


def _canonical(number: str) -> str:
    """ "12.0" and "12" are one number."""
    return number[:-2] if number.endswith(".0") else number


@dataclass(frozen=True)
class Extracted:
    trajectories: list[Trajectory]
    pairs: list[StepPair]
    solved: bool
    dropped: dict[str, int] = field(default_factory=dict)  # right trajectories left out, by rule
    lone: int = 0  # trees whose one right path stands against several wrong ones


def _mean_q(tree: Tree, node: Node) -> float:
    path = tree.path(node.id)
    return sum(tree.nodes[n].q(tree.config.q_mode) for n in path) / max(1, len(path))


def _clean(tree: Tree, node: Node) -> bool:
    """No code error anywhere on the path (errors are counted on the nodes that raised)."""
    return all(tree.nodes[n].code_errors == 0 and tree.nodes[n].error is None for n in tree.path(node.id)[:-1])


def _right(node: Node) -> bool:
    return node.terminal and node.reward is not None and node.reward > 0


def _lucky(tree: Tree, numbers: NumberRule | None) -> set[int]:
    """The right terminals whose program uses a number it had no reason to."""
    if numbers is None:
        return set()
    return {n.id for n in tree.terminals() if _right(n) and numbers.foreign(tree.question, tree.steps_of(n.id))}


def _outcomes(tree: Tree, lucky: set[int]) -> dict[int, tuple[bool, bool]]:
    """For each node: (leads to a correct answer, leads to a wrong answer) somewhere below it. A lucky terminal
    is neither: its answer is right, its reasoning is not."""
    result: dict[int, tuple[bool, bool]] = {}
    for node in reversed(tree.nodes):  # children come after their parent
        right = _right(node) and node.id not in lucky
        wrong = node.terminal and not _right(node)
        for child in node.children:
            child_right, child_wrong = result[child]
            right, wrong = right or child_right, wrong or child_wrong
        result[node.id] = (right, wrong)
    return result


def _judged(tree: Tree, lucky: set[int]) -> tuple[list[Trajectory], Counter[str]]:
    """The tree's SFT trajectories, and how many right ones each rule left out."""
    dropped: Counter[str] = Counter()
    correct = []
    for node in (n for n in tree.terminals() if _right(n)):
        if not _clean(tree, node):
            dropped["code error"] += 1
        elif node.id in lucky:
            dropped["foreign number"] += 1
        else:
            correct.append(node)
    best = sorted(correct, key=lambda n: (-_mean_q(tree, n), n.id))[:TOP_K]
    return [Trajectory(tree.question, tree.steps_of(n.id)) for n in best], dropped


def clean_right_terminals(tree: Tree, numbers: NumberRule | None = None) -> list[Node]:
    """The terminals that reached the right answer with no code error and, under `numbers`, no foreign number."""
    lucky = _lucky(tree, numbers)
    return [n for n in tree.terminals() if _right(n) and _clean(tree, n) and n.id not in lucky]


def sft_trajectories(tree: Tree, numbers: NumberRule | None = None) -> list[Trajectory]:
    return _judged(tree, _lucky(tree, numbers))[0]


def lone(tree: Tree, least_wrong: int = 3) -> bool:
    """Whether one terminal alone reached the right answer while at least `least_wrong` others missed it."""
    terminals = tree.terminals()
    right = sum(_right(n) for n in terminals)
    return right == 1 and len(terminals) - right >= least_wrong


def step_pairs(tree: Tree, margin: float = 0.5, numbers: NumberRule | None = None) -> list[StepPair]:
    return _pairs(tree, margin, _lucky(tree, numbers))


def _pairs(tree: Tree, margin: float, lucky: set[int]) -> list[StepPair]:
    outcomes = _outcomes(tree, lucky)
    mode = tree.config.q_mode
    pairs: list[StepPair] = []
    for parent in tree.nodes:
        children = [tree.nodes[c] for c in parent.children if tree.nodes[c].visits > 0]
        positives = sorted((c for c in children if outcomes[c.id][0]), key=lambda c: -c.q(mode))[:TOP_K]
        negatives = sorted(
            (c for c in children if outcomes[c.id][1] and not outcomes[c.id][0]), key=lambda c: c.q(mode)
        )[:TOP_K]
        prefix = tree.steps_of(parent.id) if parent.id else ()
        for good in positives:
            for bad in negatives:
                if good.q(mode) - bad.q(mode) >= margin:
                    pairs.append(StepPair(tree.question, prefix, good.step, bad.step))
    # Final step: whole trajectories, right against wrong.
    terminals = tree.terminals()
    right = sorted((n for n in terminals if _right(n) and n.id not in lucky), key=lambda n: -_mean_q(tree, n))[:TOP_K]
    wrong = sorted((n for n in terminals if not _right(n)), key=lambda n: _mean_q(tree, n))[:TOP_K]
    for good in right:
        for bad in wrong:
            pairs.append(
                StepPair(tree.question, (), "\n".join(tree.steps_of(good.id)), "\n".join(tree.steps_of(bad.id)))
            )
    return pairs


def extract(trees: Iterable[Tree], margin: float = 0.5, numbers: NumberRule | None = None) -> Extracted:
    trees = list(trees)
    trajectories: list[Trajectory] = []
    dropped: Counter[str] = Counter()
    pairs: list[StepPair] = []
    for tree in trees:
        lucky = _lucky(tree, numbers)  # once a tree: it reads every right terminal's program
        kept, left_out = _judged(tree, lucky)
        trajectories += kept
        dropped += left_out
        pairs += _pairs(tree, margin, lucky)
    lone_trees = sum(lone(tree) for tree in trees if any(_right(n) for n in tree.terminals()))
    return Extracted(trajectories, pairs, solved=bool(trajectories), dropped=dict(dropped), lone=lone_trees)
