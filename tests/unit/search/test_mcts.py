"""Each rule of the MCTS engine, on trees driven by a scripted policy, a real in-process exec and a fake PPM."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

from services.math import stepfmt
from services.search.engine.answers import choose
from services.search.engine.mcts import Candidate, Execute, Expand, Grade, Node, Score, SearchConfig, Tree
from support.scripted import BAD, GOOD, run_program, scripted

BROKEN = stepfmt.render_step("oops", "x = 1 / 0")


def drive(
    tree: Tree,
    policy: Callable[[tuple[str, ...]], list[Candidate]] = scripted,
    score: Callable[[tuple[str, ...]], float] = lambda steps: 0.0,
) -> list[str]:
    """Answer every need until the tree is done; returns the kinds of needs seen, in order."""
    seen = []
    while not tree.done:
        need = tree.need
        seen.append(type(need).__name__)
        if isinstance(need, Expand):
            tree.deliver_candidates(policy(need.steps))
        elif isinstance(need, Execute):
            tree.deliver_executions([run_program(p) for p in need.programs])
        elif isinstance(need, Score):
            tree.deliver_scores([score(steps) for steps in need.steps])
        elif isinstance(need, Grade):
            assert tree.reference is not None
            tree.deliver_grades([answer.strip() == tree.reference for answer in need.answers])
        assert len(seen) < 10_000, "the search never ends"
    return seen


def test_one_rollout_asks_for_each_stage_in_order() -> None:
    tree = Tree("Tom has 3 apples and buys 5. How many?", SearchConfig(rollouts=1), reference="8")
    assert isinstance(tree.need, Expand) and tree.need.node == 0 and tree.need.steps == ()
    seen = drive(tree)
    # expand root → run + score the 2 distinct moves → expand → run + score print → expand → score + grade answer
    assert seen == ["Expand", "Execute", "Score", "Expand", "Execute", "Score", "Expand", "Score", "Grade"]
    assert tree.stats.rollouts == 1
    assert len(tree.nodes[0].children) == 2  # identical candidate texts were merged


def test_terminal_rewards_back_up_and_q_separates_right_from_wrong() -> None:
    tree = Tree("Tom has 3 apples and buys 5. How many?", SearchConfig(rollouts=8, seed=3), reference="8")
    drive(tree)
    root = tree.nodes[0]
    assert root.visits == 8
    good, bad = (tree.nodes[c] for c in root.children)
    assert good.step == GOOD and bad.step == BAD
    assert good.visits >= 1 and bad.visits >= 1  # unvisited children are tried first
    assert good.q("terminal") == 1.0 and bad.q("terminal") == -1.0
    rewards = {n.answer: n.reward for n in tree.terminals()}
    assert rewards == {"8": 1.0, "-2": -1.0}
    # The program's stdout became an output step before the answer.
    path = tree.steps_of(tree.terminals()[0].id)
    assert path[2].startswith(stepfmt.OUTPUT_START) and stepfmt.is_final(path[3])


def test_uct_prefers_high_q_then_explores() -> None:
    tree = Tree("q", SearchConfig(c=2.0))
    parent = tree.nodes[0]
    parent.visits = 10
    for visits, value in ((6, 4.0), (3, -3.0), (1, 0.0)):
        child = Node(id=len(tree.nodes), parent=0, step="s", depth=1, visits=visits, value_sum=value)
        tree.nodes.append(child)
        parent.children.append(child.id)
    expected = max(
        parent.children,
        key=lambda c: tree.nodes[c].q("terminal") + 2.0 * math.sqrt(math.log(10) / tree.nodes[c].visits),
    )
    assert tree._select(parent) == expected == 3  # the once-visited child wins on exploration
    tree.nodes[3].visits = 50
    assert tree._select(parent) == 1


def test_ppm_mode_uses_the_score_as_initial_q() -> None:
    node = Node(id=1, parent=0, step="s", depth=1, ppm_score=0.6)
    assert node.q("ppm") == pytest.approx(0.6)
    node.visits, node.value_sum = 1, -1.0
    assert node.q("ppm") == pytest.approx(-0.2)
    assert node.q("terminal") == -1.0


def test_consecutive_code_errors_past_the_threshold_end_the_path() -> None:
    def erring(steps: tuple[str, ...]) -> list[Candidate]:
        return [Candidate(BROKEN, True)]

    tree = Tree("q", SearchConfig(rollouts=1, max_code_errors=1), reference="8")
    drive(tree, erring)
    first, second = tree.nodes[1], tree.nodes[2]
    assert first.code_errors == 1 and not first.terminal  # one error is tolerated
    assert second.code_errors == 2 and second.terminal and second.reward == -1.0
    assert second.error is not None and "ZeroDivisionError" in second.error


def test_a_failing_last_code_step_is_terminal() -> None:
    def crash_at_end(steps: tuple[str, ...]) -> list[Candidate]:
        return [Candidate(stepfmt.render_step("print", "print(undefined)", last=True), True)]

    tree = Tree("q", SearchConfig(rollouts=1, max_code_errors=5), reference="8")
    drive(tree, crash_at_end)
    assert tree.nodes[1].terminal and tree.nodes[1].reward == -1.0 and "NameError" in (tree.nodes[1].error or "")


@pytest.mark.parametrize(
    ("candidate", "error"),
    [
        (Candidate("x = 1", False), "no end-of-step marker"),
        (Candidate("x = 1 <end_of_step> <end_of_step>", True), "exactly one end marker"),
        (Candidate("<answer>I think it is 8 <end_of_answer>", True), "no boxed answer"),
        (Candidate("<output>8<end_of_output>", True), "unfinished step"),
    ],
)
def test_unparsable_output_is_minus_one_at_that_node(candidate: Candidate, error: str) -> None:
    tree = Tree("q", SearchConfig(rollouts=1), reference="8")
    drive(tree, lambda steps: [candidate])
    child = tree.nodes[1]
    assert child.terminal and child.reward == -1.0
    assert error in (child.error or "")


def test_depth_limit_is_minus_one() -> None:
    tree = Tree("q", SearchConfig(rollouts=2, max_depth=1), reference="8")
    drive(tree)
    assert all(tree.nodes[c].terminal and tree.nodes[c].error == "depth limit" for c in tree.nodes[0].children)
    assert tree.nodes[0].value_sum == -2.0


def test_inference_rewards_answers_by_the_ppm() -> None:
    def score(steps: tuple[str, ...]) -> float:
        return 0.9 if steps and "boxed{8}" in steps[-1] else -0.3

    tree = Tree("q", SearchConfig(rollouts=6, q_mode="ppm"))
    kinds = drive(tree, score=score)
    assert "Grade" not in kinds  # no reference: nothing to grade against
    assert {n.answer: n.reward for n in tree.terminals()} == {"8": 0.9, "-2": -0.3}
    choice = choose([tree], "ppm")
    assert choice is not None and choice.answer == "8" and choice.score == pytest.approx(0.9)
    assert choice.solution.startswith(stepfmt.ASSISTANT_PREFIX) and "\\boxed{8}" in choice.solution


def test_same_seed_same_tree_and_json_round_trip() -> None:
    def build(seed: int) -> Tree:
        tree = Tree("q", SearchConfig(rollouts=5, seed=seed), reference="8")
        drive(tree, score=lambda steps: 0.1 * len(steps))
        return tree

    assert json.dumps(build(1).to_json()) == json.dumps(build(1).to_json())
    restored = Tree.from_json(json.loads(json.dumps(build(1).to_json())))
    assert restored.done and restored.nodes == build(1).nodes


def test_vote_pools_searches_and_weighs_scores() -> None:
    trees = []
    for seed in range(3):
        tree = Tree("q", SearchConfig(rollouts=4, seed=seed, q_mode="ppm"))
        drive(tree, score=lambda steps: 0.2 if steps and "boxed{8}" in steps[-1] else 0.95)
        trees.append(tree)
    # Every tree reaches both answers; "-2" scores higher, so both rules pick it here, the vote by weight.
    by_ppm, by_vote = choose(trees, "ppm"), choose(trees, "vote")
    assert by_ppm is not None and by_ppm.answer == "-2"
    terminals = [n for t in trees for n in t.terminals()]
    weight = {a: sum((1 + n.ppm_score) / 2 for n in terminals if n.answer == a) for a in ("8", "-2")}
    assert by_vote is not None and by_vote.answer == max(weight, key=weight.__getitem__)
    assert choose([Tree("q", SearchConfig(rollouts=0))], "vote") is None


def test_vote_and_ppm_disagree_when_one_lucky_score_meets_many_agreeing_ones() -> None:
    tree = Tree("q", SearchConfig(rollouts=0))
    for answer, score in (("8", 0.6), ("8", 0.5), ("8", 0.55), ("-2", 0.9)):
        node = Node(
            id=len(tree.nodes),
            parent=0,
            step=stepfmt.render_answer(answer),
            depth=1,
            terminal=True,
            reward=score,
            answer=answer,
            ppm_score=score,
            visits=1,
            value_sum=score,
        )
        tree.nodes.append(node)
        tree.nodes[0].children.append(node.id)
    by_ppm, by_vote = choose([tree], "ppm"), choose([tree], "vote")
    assert by_ppm is not None and (by_ppm.answer, by_ppm.score) == ("-2", 0.9)
    assert by_vote is not None and by_vote.answer == "8"
    assert by_vote.score == pytest.approx((1.6 + 1.5 + 1.55) / 2 / 4)


def test_an_empty_candidate_is_terminal_and_never_sent_to_the_ppm() -> None:
    tree = Tree("q", SearchConfig(rollouts=1), reference="8")
    kinds = drive(tree, lambda steps: [Candidate("", True)])
    assert kinds == ["Expand"]  # nothing to run, nothing to score
    assert tree.nodes[1].terminal and tree.nodes[1].reward == -1.0


def test_confidence_picks_the_path_the_policy_found_likeliest_whatever_the_ppm_says() -> None:
    # The policy was sure of the right first move (-0.1 per token) and unsure of the wrong one (-2 per token);
    # the PPM prefers the wrong path. Program outputs are not generated, so they carry no tokens.
    def policy(steps: tuple[str, ...]) -> list[Candidate]:
        return [
            Candidate(c.text, c.finished, tokens=5, logprob=(-10.0 if c.text == BAD else -0.5)) for c in scripted(steps)
        ]

    tree = Tree("q", SearchConfig(rollouts=6, q_mode="ppm"))
    drive(tree, policy, score=lambda steps: 0.9 if any("3 - 5" in s for s in steps) else 0.1)
    assert {n.answer for n in tree.terminals()} == {"8", "-2"}
    assert {(n.tokens, n.logprob) for n in tree.nodes[1:]} == {(5, -0.5), (5, -10.0)}
    by_ppm, by_confidence = choose([tree], "ppm"), choose([tree], "confidence")
    assert by_ppm is not None and by_ppm.answer == "-2"
    assert by_confidence is not None and by_confidence.answer == "8"
    # Three generated steps of 5 tokens at -0.5 each: a mean of -0.1 per token, reported as its exp.
    assert by_confidence.score == pytest.approx(math.exp(-0.1))
