"""Rephrasings say a curriculum problem another way and change nothing it means."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from services.math.curriculum import generate
from services.math.curriculum.rephrase import HELD_OUT, TAUGHT, mixed, rephrasing, teacher_problems


def _numbers(text: str) -> Counter[str]:
    return Counter(re.findall(r"\d+(?:/\d+)?%?", text))


PROBLEMS = [p for level in (1, 2, 3) for p in generate(level, 300, seed=12345)]


@pytest.mark.parametrize("said", [TAUGHT, HELD_OUT], ids=lambda r: r.name)
def test_a_rephrasing_keeps_every_number_and_the_solution(said) -> None:  # type: ignore[no-untyped-def]
    changed = 0
    for problem in PROBLEMS:
        again = said.problem(problem)
        assert _numbers(again.question) == _numbers(problem.question), (problem.question, again.question)
        assert (again.id, again.answer, again.solution) == (problem.id, problem.answer, problem.solution)
        assert again == said.problem(problem)  # deterministic by id
        changed += again.question != problem.question
    assert changed > len(PROBLEMS) // 4


def test_the_taught_rules_reach_a_persons_phrasing() -> None:
    question = "Mia has 14 marbles. She gives away 5 marbles. How many marbles does Mia have now?"
    said = {TAUGHT.question(question, random.Random(seed)) for seed in range(200)}
    assert "Mia has 14 marbles and gives 5 away. How many are left?" in said


def test_held_out_wordings_are_never_taught() -> None:
    held_out_only = ("donates", "picks up", "receives", "Later on,", "After this", "left with", "remain?", ", and then")
    taught = " ".join(TAUGHT.problem(p).question for p in PROBLEMS)
    canonical = " ".join(p.question for p in PROBLEMS)
    rephrased = " ".join(HELD_OUT.problem(p).question for p in PROBLEMS)
    for words in held_out_only:
        assert words not in taught and words not in canonical, words
    assert sum(words in rephrased for words in held_out_only) >= 6


def test_about_the_asked_share_of_teacher_problems_is_rephrased() -> None:
    problems = generate(1, 400, seed=3)
    half = mixed(problems, 0.5, seed=3)
    differs = sum(a.question != b.question for a, b in zip(problems, half, strict=True))
    assert 80 < differs < 200  # half are chosen, and a rule fires on most of those
    assert mixed(problems, 0.0, seed=3) == problems
    assert teacher_problems(1, 400, 3, 0.5) == half
    with pytest.raises(ValueError, match="fraction"):
        mixed(problems, 1.5, seed=3)
    with pytest.raises(ValueError, match="held-out"):
        rephrasing("paraphrased")


def test_eval_reads_only_the_rephrased_problems_under_their_own_ids(capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli.main import build_parser, main
    from services.cli.search import load_problems

    def problems(*flags: str) -> list:  # type: ignore[type-arg]
        return load_problems(build_parser().parse_args(["eval", "--dataset", "curriculum", "--n", "40", *flags]))

    canonical = {p.id: p for p in problems()}
    held_out = problems("--rephrase", "held-out")
    assert 0 < len(held_out) < len(canonical)
    for p in held_out:
        assert p.question != canonical[p.id].question and p.answer == canonical[p.id].answer
    assert main(["eval", "--dataset", "math500", "--rephrase", "taught"]) != 0
    assert "--rephrase" in capsys.readouterr().err
