"""The grader on the real answers of ../shared/data, rewritten in equivalent and in wrong forms, and on the
format differences between sources listed in ../shared/data/README.md."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.math.datasets import data_dir, load_dataset
from services.math.grading import Grader
from services.math.grading_bench import equivalent_forms, pairs_for, wrong_forms

pytestmark = pytest.mark.usefixtures("needs_data")


def _rows(relative: str) -> list[dict[str, Any]]:
    path = data_dir() / relative
    if path.suffix == ".json":
        rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        return rows
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _disagreements(grader: Grader, pairs: list[tuple[Any, Any, bool]]) -> list[tuple[Any, Any, bool, str]]:
    results = grader.grade_many([(ref, pred) for ref, pred, _ in pairs])
    return [(ref, pred, want, r.reason) for (ref, pred, want), r in zip(pairs, results, strict=True) if r.equal != want]


@pytest.mark.parametrize("dataset", ["math500", "gsm8k_test", "aime24", "amc23"])
def test_rewritten_answers(grader: Grader, dataset: str) -> None:
    answers = [problem.answer for problem in load_dataset(dataset)]
    pairs = pairs_for(answers)
    assert sum(1 for *_, want in pairs if want) >= 4 * len(answers)  # every answer in at least 4 right forms
    assert sum(1 for *_, want in pairs if not want) >= len(answers)  # and at least 1 wrong one
    assert _disagreements(grader, pairs) == []


def test_math500_answers_that_need_math_verify(grader: Grader) -> None:
    # LaTeX answers rewritten so that only symbolic comparison can tell: \frac{A}{B} -> ((A)/(B)).
    answers = [p.answer for p in load_dataset("math500") if "\\frac" in p.answer and "\\frac{" in p.answer]
    pairs = [(a, form, True) for a in answers for form in equivalent_forms(a) if "/(" in form]
    assert len(pairs) >= 5  # 7 of the 500 answers have such a fraction
    results = grader.grade_many([(ref, pred) for ref, pred, _ in pairs])
    assert [r.equal for r in results] == [True] * len(pairs)
    assert {r.method for r in results} == {"math_verify"}


def test_rewrites_are_what_they_claim() -> None:
    assert "025" in equivalent_forms("25") and "2,125" in equivalent_forms("2125")
    assert equivalent_forms("\\frac{3}{4}")[-1] == "0.75"
    assert wrong_forms("25") == ["26", "\\boxed{24}"]
    assert wrong_forms("\\frac{3}{4}") == ["\\frac{7}{4}", "\\frac{4}{3}"]
    assert wrong_forms("3\\sqrt{13}") == ["4\\sqrt{13}"]


def test_aime_zero_padded_and_plain_answers_agree(grader: Grader) -> None:
    qwen, rstar = _rows("aime24/test.jsonl"), _rows("rstar_eval/aime2024_test.json")
    assert [q["problem"] for q in qwen] == [r["question"] for r in rstar]
    assert sum(q["answer"] != r["answer"] for q, r in zip(qwen, rstar, strict=True)) == 7  # the README's count
    results = grader.grade_many([(q["answer"], r["answer"]) for q, r in zip(qwen, rstar, strict=True)])
    assert all(r.equal for r in results)
    wrong = grader.grade_many([(q["answer"], str(int(r["answer"]) + 1)) for q, r in zip(qwen, rstar, strict=True)])
    assert not any(r.equal for r in wrong)


def test_amc_float_and_integer_answers_agree(grader: Grader) -> None:
    qwen, rstar = _rows("amc23/test.jsonl"), _rows("rstar_eval/amc23_test.json")
    assert all(isinstance(q["answer"], float) for q in qwen)
    results = grader.grade_many([(q["answer"], r["answer"]) for q, r in zip(qwen, rstar, strict=True)])
    assert all(r.equal for r in results)
    wrong = grader.grade_many([(q["answer"] + 1, r["answer"]) for q, r in zip(qwen, rstar, strict=True)])
    assert not any(r.equal for r in wrong)


def test_gsm8k_worked_solutions_against_final_answers(grader: Grader) -> None:
    openai, rstar = _rows("gsm8k/test.jsonl"), _rows("rstar_eval/GSM8K_test.json")
    assert sum("," in r["answer"] for r in rstar) == 14  # thousands separators, as the README says
    # The reference is OpenAI's whole worked solution ending in "#### N"; the prediction rStar's answer.
    results = grader.grade_many([(o["answer"], r["answer"]) for o, r in zip(openai, rstar, strict=True)])
    assert all(r.equal for r in results)
    wrong = grader.grade_many([(o["answer"], wrong_forms(r["answer"])[0]) for o, r in zip(openai, rstar, strict=True)])
    assert not any(r.equal for r in wrong)


def test_math500_sources_agree(grader: Grader) -> None:
    prm, rstar = _rows("math500/test.jsonl"), _rows("rstar_eval/math500_test.json")
    results = grader.grade_many([(p["answer"], r["answer"]) for p, r in zip(prm, rstar, strict=True)])
    assert all(r.equal for r in results)
