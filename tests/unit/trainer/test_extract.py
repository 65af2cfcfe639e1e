"""The training data a finished tree gives: only clean right solutions are taught (the number rule)."""

from __future__ import annotations

from services.math import stepfmt
from services.search.engine.mcts import Node, SearchConfig, Tree
from services.trainer.extract import NumberRule, extract, sft_trajectories, step_pairs

QUESTION = "Ana has 70 apples. She loses 20 apples. Then she finds 5 more. How many apples does Ana have?"
RULE = NumberRule()


def _add_path(tree: Tree, codes: list[str], *, stdout: str, answer: str, right: bool, visits: int = 1) -> Node:
    """A path from the root: code steps (the last ends the code, its program printing `stdout`), then the answer."""
    parent = tree.nodes[0]
    for index, code in enumerate(codes):
        last = index == len(codes) - 1
        step = stepfmt.render_step("a move", code, last=last)
        node = Node(id=len(tree.nodes), parent=parent.id, step=step, depth=parent.depth + 1, visits=visits)
        node.value_sum = (1.0 if right else -1.0) * visits
        if last:
            node.stdout = stdout
        tree.nodes.append(node)
        parent.children.append(node.id)
        parent = node
    terminal = Node(
        id=len(tree.nodes),
        parent=parent.id,
        step=stepfmt.render_answer(answer),
        depth=parent.depth + 1,
        visits=visits,
        terminal=True,
        reward=1.0 if right else -1.0,
        answer=answer,
        value_sum=(1.0 if right else -1.0) * visits,
    )
    tree.nodes.append(terminal)
    parent.children.append(terminal.id)
    return terminal


def _tree() -> Tree:
    tree = Tree(QUESTION, SearchConfig(rollouts=4, candidates=2), reference="55")
    tree.nodes[0].visits = 4
    return tree


def test_a_right_answer_reached_with_a_number_the_question_never_gave_is_not_taught() -> None:
    tree = _tree()
    # 70 - 20 + 5 = 55, soundly; and 70 - 2 - 18 + 5 = 55 with numbers of its own: right by luck.
    _add_path(tree, ["x = 70 - 20", "x = x + 5\nprint(x)"], stdout="55", answer="55", right=True)
    _add_path(tree, ["x = 70 - 2", "x = x - 18 + 5\nprint(x)"], stdout="55", answer="55", right=True)
    _add_path(tree, ["x = 70 + 20", "print(x)"], stdout="90", answer="90", right=False)

    data = extract([tree], numbers=RULE)

    assert [t.steps[0] for t in data.trajectories] == [stepfmt.render_step("a move", "x = 70 - 20")]
    assert data.dropped == {"foreign number": 1}
    # Without the rule both right paths are taught: the rule is what drops the lucky one.
    assert len(sft_trajectories(tree)) == 2


def test_the_rule_allows_the_sound_constants_and_what_earlier_outputs_printed() -> None:
    assert RULE.foreign("A radio costs 55 dollars, 20% off.", ["# off\noff = 55 * 20 // 100\n<end_of_step>"]) == []
    # A number in a comment is not code; 7 in code is foreign.
    assert RULE.foreign(QUESTION, ["# 7 apples\nx = 70 - 7\n<end_of_step>"]) == ["7"]
    printed = [stepfmt.render_output("42"), "x = 42 + 20\n<end_of_step>"]
    assert RULE.foreign(QUESTION, printed) == []
    assert NumberRule(frozenset()).foreign("Half of 10?", ["x = 10 / 2\n<end_of_step>"]) == ["2"]


def test_a_lucky_right_answer_is_no_pair_s_positive_and_a_lone_solution_is_counted() -> None:
    tree = _tree()
    lucky = _add_path(tree, ["x = 70 - 2", "x = x - 18 + 5\nprint(x)"], stdout="55", answer="55", right=True)
    for wrong in ("90", "45", "65"):
        _add_path(tree, [f"x = {wrong}", "print(x)"], stdout=wrong, answer=wrong, right=False)

    lucky_steps = {tree.nodes[n].step for n in tree.path(lucky.id)} | {"\n".join(tree.steps_of(lucky.id))}
    assert not [p for p in step_pairs(tree, numbers=RULE) if p.chosen in lucky_steps]
    assert [p for p in step_pairs(tree) if p.chosen in lucky_steps]  # the rule is what keeps it out

    data = extract([tree], numbers=RULE)
    assert data.trajectories == [] and not data.solved
    assert data.lone == 1  # one right path against three wrong ones
