"""Training data from finished search trees, by the paper's rules.

SFT: per solved problem, the top-2 correct trajectories by mean Q along their path; any trajectory with a code
error on its path is dropped (a step that failed and was "fixed" later teaches the wrong habit).

PPM pairs: at every expanded node, among its children, the (up to) 2 with the highest Q that lead to a correct
answer are positives and the 2 with the lowest Q that lead to a wrong answer are negatives; they share the
prefix (the path to the node). A pair needs a Q margin (authors' code: 0.5). For the final step, whole
trajectories are compared: correct terminals against wrong ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.search.engine.mcts import Node, Tree
from services.trainer.data import StepPair, Trajectory

TOP_K = 2


@dataclass(frozen=True)
class Extracted:
    trajectories: list[Trajectory]
    pairs: list[StepPair]
    solved: bool


def _mean_q(tree: Tree, node: Node) -> float:
    path = tree.path(node.id)
    return sum(tree.nodes[n].q(tree.config.q_mode) for n in path) / max(1, len(path))


def _clean(tree: Tree, node: Node) -> bool:
    """No code error anywhere on the path (errors are counted on the nodes that raised)."""
    return all(tree.nodes[n].code_errors == 0 and tree.nodes[n].error is None for n in tree.path(node.id)[:-1])


def _outcomes(tree: Tree) -> dict[int, tuple[bool, bool]]:
    """For each node: (leads to a correct answer, leads to a wrong answer) somewhere below it."""
    result: dict[int, tuple[bool, bool]] = {}
    for node in reversed(tree.nodes):  # children come after their parent
        right = node.terminal and node.reward is not None and node.reward > 0
        wrong = node.terminal and (node.reward is None or node.reward <= 0)
        for child in node.children:
            child_right, child_wrong = result[child]
            right, wrong = right or child_right, wrong or child_wrong
        result[node.id] = (right, wrong)
    return result


def sft_trajectories(tree: Tree) -> list[Trajectory]:
    correct = [n for n in tree.terminals() if n.reward is not None and n.reward > 0 and _clean(tree, n)]
    best = sorted(correct, key=lambda n: (-_mean_q(tree, n), n.id))[:TOP_K]
    return [Trajectory(tree.question, tree.steps_of(n.id)) for n in best]


def step_pairs(tree: Tree, margin: float = 0.5) -> list[StepPair]:
    outcomes = _outcomes(tree)
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
    right = sorted((n for n in terminals if n.reward and n.reward > 0), key=lambda n: -_mean_q(tree, n))[:TOP_K]
    wrong = sorted((n for n in terminals if not (n.reward and n.reward > 0)), key=lambda n: _mean_q(tree, n))[:TOP_K]
    for good in right:
        for bad in wrong:
            pairs.append(
                StepPair(tree.question, (), "\n".join(tree.steps_of(good.id)), "\n".join(tree.steps_of(bad.id)))
            )
    return pairs


def extract(trees: Iterable[Tree], margin: float = 0.5) -> Extracted:
    trees = list(trees)
    trajectories = [t for tree in trees for t in sft_trajectories(tree)]
    pairs = [p for tree in trees for p in step_pairs(tree, margin)]
    return Extracted(trajectories, pairs, solved=bool(trajectories))
