"""`make demo`'s closing comparison: what a newcomer reads about greedy decoding against MCTS."""

from __future__ import annotations

from services.dev.demo import comparison
from services.math.curriculum import generate


def test_the_demo_ends_with_the_problems_each_method_alone_solves_and_the_paired_test() -> None:
    problems = generate(3, 6, seed=777)
    mcts = [True, True, False, True, False, False]
    greedy = [True, False, False, False, True, False]
    answers = [p.answer if ok else "0" for p, ok in zip(problems, mcts, strict=True)]

    text = comparison(problems, answers, mcts, greedy)

    lines = text.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["MCTS", "MCTS", "greedy"]  # the discordant problems only
    assert problems[1].question[:40] in lines[1] and problems[4].question[:40] in lines[3]
    assert "greedy decoding 2/6, MCTS (8 rollouts, PPM) 3/6; MCTS alone solved 2, greedy alone 1" in text
    assert "p = 1" in text  # 2 against 1 is no evidence either way
