"""Answer grading: the fast path, math-verify in worker processes, deadlines, crashes."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from services.math.grading import Grader, GradeResult, extract_answer, fast_grade, normalise

EQUAL = [
    # numbers
    ("18", "18"),
    ("3", "3.0"),
    ("27.0", "27"),
    ("025", "25"),
    ("2,125", "2125"),
    ("2{,}125", "2125"),
    ("-5", "-5.00"),
    ("0.5", "\\frac{1}{2}"),
    ("\\frac12", "1/2"),
    ("\\dfrac{14}{3}", "14/3"),
    ("-\\frac{3}{4}", "-0.75"),
    ("\\frac{-3}{4}", "-3/4"),
    ("10\\%", "10"),
    ("10\\%", "0.1"),
    ("50%", "50"),
    ("1/3", "0.333333"),
    # units, text, degrees, money, variables
    ("18", "18 dollars"),
    ("18", "\\$18"),
    ("90^\\circ", "90"),
    ("90", "90^{\\circ}"),
    ("5", "5 \\text{ cm}"),
    ("x = 3", "3"),
    ("3", "y=3"),
    ("\\text{Evelyn}", "Evelyn"),
    ("\\textbf{(C)}", "(C)"),
    # answers inside free text
    ("5", "The answer is $\\boxed{5}$"),
    ("5", "The answer is 5."),
    ("5", "so the final answer is: 5"),
    ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18"),
    ("18", "She makes 9 * 2 = $18.\n#### 18"),
    # LaTeX through math-verify
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("6 - 5i", "6-5i"),
    ("p - q", "-q+p"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("[1, 2)", "[1,2)"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
    ("137 \\frac{1}{2}", "275/2"),
    ("\\pi", "\\boxed{\\pi}"),
    ("\\frac{\\pi}{4}", "The answer is $\\boxed{\\dfrac{\\pi}{4}}$."),
]

NOT_EQUAL = [
    ("18", "19"),
    ("25", "250"),
    ("1/3", "0.33"),
    ("0.5", "\\frac{1}{3}"),
    ("x = 3", "4"),
    ("(1,2]", "[1,2)"),
    ("\\pi", "3.14159"),
    ("3\\sqrt{13}", "4\\sqrt{13}"),
    ("p - q", "q - p"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("5", ""),
    ("5", "I do not know"),
    ("5", "\\boxed{}"),
    ("10\\%", "1"),
]


@pytest.mark.parametrize(("reference", "prediction"), EQUAL)
def test_equivalent_answers_are_equal(grader: Grader, reference: str, prediction: str) -> None:
    result = grader.grade(reference, prediction)
    assert result.equal, result


@pytest.mark.parametrize(("reference", "prediction"), NOT_EQUAL)
def test_different_answers_are_not_equal(grader: Grader, reference: str, prediction: str) -> None:
    result = grader.grade(reference, prediction)
    assert not result.equal, result


def test_typical_answers_never_leave_the_calling_process() -> None:
    for reference, prediction in [
        ("18", "18.0"),
        ("025", "25"),
        ("2,125", "2125"),
        ("3/4", "0.75"),
        ("\\frac{3}{4}", "3/4"),
        ("10\\%", "10"),
        ("18", "19"),
        ("x = 3", "3"),
        ("5", "The answer is $\\boxed{5}$"),
    ]:
        assert fast_grade(reference, prediction) is not None, (reference, prediction)


def test_the_fast_path_leaves_what_it_cannot_be_sure_of_to_math_verify() -> None:
    assert fast_grade("\\sqrt{4}", "2") is None
    assert fast_grade("1/3", "0.333333") is None  # a rounded decimal: math-verify's rounding rules decide
    assert fast_grade("p - q", "-q + p") is None


def test_extract_and_normalise() -> None:
    assert extract_answer("blah \\boxed{\\frac{1}{2}} blah") == "\\frac{1}{2}"
    assert extract_answer("work\n#### 1,234") == "1,234"
    assert extract_answer("The final answer is 7.") == "7"
    assert extract_answer("The answer is not 4. The final answer is: 5.") == "5"
    assert extract_answer("Answer: $\\frac{1}{2}$") == "$\\frac{1}{2}$"
    assert extract_answer("no marker at all ") == "no marker at all"
    assert normalise("$\\text{Yes}$") == "yes"
    assert normalise("\\left( 1, 2 \\right)") == "(1,2)"


def test_inputs_of_any_type_are_graded_not_raised(grader: Grader) -> None:
    assert grader.grade(27.0, "27").equal  # AMC's float answers
    assert grader.grade(25, "025").equal
    assert not grader.grade("5", None).equal
    assert grader.grade("", "5") == GradeResult(False, "empty reference", "empty")
    assert not grader.grade("5", "\\frac{1}{0}").equal
    assert not grader.grade("5", "1/0").equal
    assert not grader.grade("5", "}{" * 50).equal
    assert grader.grade("5", "blah " * 100_000 + "The answer is 5.").equal  # a runaway generation
    assert not grader.grade("5", "9" * 10_000).equal  # too long for int(): math-verify decides
    assert grader.grade("1000", "1e3").equal
    started = time.monotonic()
    assert not grader.grade("5", "1e99999999").equal  # not built as an integer in the caller
    assert time.monotonic() - started < 5.0 + 1.0
    with pytest.raises(ValueError, match="workers"):
        Grader(workers=0)


def test_grade_many_keeps_the_order(grader: Grader) -> None:
    pairs = [(ref, pred) for ref, pred in EQUAL] + [(ref, pred) for ref, pred in NOT_EQUAL]
    results = grader.grade_many(pairs)
    assert [r.equal for r in results] == [True] * len(EQUAL) + [False] * len(NOT_EQUAL)


def test_a_pathological_input_returns_within_the_deadline() -> None:
    # 9^(9^9) has 370 million digits: without a timeout sympy computes it for minutes (measured: still
    # running after 30 s); the worker's own alarm or the parent's deadline ends it.
    with Grader(workers=1, deadline_s=2.0) as grader:
        grader.warm_up()
        started = time.monotonic()
        result = grader.grade("5", "9^{9^{9}}")
        assert not result.equal
        assert time.monotonic() - started < 2.0 + 1.0
        assert grader.grade("\\sqrt{4}", "2").equal  # and the grader still works


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The misbehaving checks, importable by name in the spawned workers (they inherit sys.path)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import grader_checks

    yield grader_checks
    sys.modules.pop("grader_checks", None)


def test_a_hung_worker_is_killed_and_replaced(checks) -> None:  # type: ignore[no-untyped-def]
    with Grader(workers=2, deadline_s=1.0, check=checks.hang) as grader:
        started = time.monotonic()
        results = grader.grade_many([("a", "hang"), ("b", "\\b"), ("c", "hang"), ("d", "\\d")])
        elapsed = time.monotonic() - started
        assert [r.method for r in results] == ["timeout", "math_verify", "timeout", "math_verify"]
        assert [r.equal for r in results] == [False, True, False, True]
        assert results[0].reason == "timed out after 1 s"
        assert elapsed < 10  # two deadlines (in parallel) plus worker start-ups, never an hour
        assert grader.grade("e", "\\e") == GradeResult(True, "compared without backslashes", "math_verify")


def test_a_crashed_worker_costs_only_its_item(checks) -> None:  # type: ignore[no-untyped-def]
    with Grader(workers=2, check=checks.crash) as grader:
        results = grader.grade_many([("a", "\\a"), ("b", "crash"), ("c", "\\c"), ("d", "crash"), ("e", "\\e")])
        assert [r.equal for r in results] == [True, False, True, False, True]
        assert results[1].method == "error" and "exit code 3" in results[1].reason


def test_a_worker_that_dies_while_idle_is_replaced(checks) -> None:  # type: ignore[no-untyped-def]
    with Grader(workers=1, check=checks.crash) as grader:
        assert grader.grade("a", "\\a").equal
        worker = grader._pool._workers[0]  # type: ignore[union-attr]
        worker.process.kill()
        worker.process.join()
        assert grader.grade("b", "\\b") == GradeResult(True, "compared without backslashes", "math_verify")
        assert grader._pool._workers[0] is not worker  # type: ignore[union-attr]


def test_workers_that_cannot_start_fail_every_item_quickly(checks) -> None:  # type: ignore[no-untyped-def]
    with Grader(workers=1, check=checks.broken) as grader:
        started = time.monotonic()
        results = grader.grade_many([("a", "\\a"), ("b", "\\b")])
        assert all(r.method == "error" and "workers fail to start" in r.reason for r in results)
        assert grader.grade("18", "18.0").equal  # the fast path does not need the workers
        assert time.monotonic() - started < 30


def test_grading_from_many_threads(grader: Grader) -> None:
    errors: list[BaseException] = []
    verdicts: list[bool] = []

    def work() -> None:
        try:
            verdicts.extend(r.equal for r in grader.grade_many([("3\\sqrt{13}", "\\sqrt{117}"), ("18", "19")]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert verdicts.count(True) == 6 and verdicts.count(False) == 6


def test_close_stops_the_workers() -> None:
    grader = Grader(workers=1)
    grader.warm_up()
    processes = [w.process for w in grader._pool._workers]  # type: ignore[union-attr]
    assert all(p.is_alive() for p in processes)
    grader.close()
    assert not any(p.is_alive() for p in processes)
    assert grader.grade("\\sqrt{4}", "2") == GradeResult(False, "grader is closed", "error")


# Public equivalence judgements (Math-Verify's test suite, huggingface/Math-Verify tests/) that this grader missed
# before: decimal commas, several boxed answers, a final statement after an intermediate \boxed{}.
@pytest.mark.parametrize(
    ("reference", "prediction", "equal"),
    [
        ("1,22", "1.22", True),
        ("1000.99", "1000,99", True),
        ("0,111", "0.111", True),
        ("$\\boxed{1}\\boxed{2}$", "$\\boxed{1,2}$", True),
        ("\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", "$\\boxed{-2,1}$.", True),
        ("$$\\boxed{2}, \\boxed{3}, \\boxed{5}, \\boxed{7}, \\boxed{13}$$", "$${2, 3, 5, 7, 13}$$", True),
        ("\\boxed{1} papers and \\boxed{2} bins", "$\\boxed{1,2}$", True),
        ("$10455$", "So $\\boxed{200}$ is earned first. The final answer is $10,455$. I hope it is correct.", True),
        (" So the answer is: \\[ \\boxed{32349} \\]", "is $\\boxed{32, 349}$", False),  # a list, not 32,349
        ("\\boxed{1} no no no no no \\boxed{2}", "$\\boxed{1,2}$", False),  # not one answer
    ],
)
def test_public_judgements_it_used_to_miss(grader: Grader, reference: str, prediction: str, equal: bool) -> None:
    assert grader.grade(reference, prediction).equal is equal


def test_a_comma_alone_is_not_taken_for_a_decimal() -> None:
    # MATH writes solution sets as "0,1": against another list the fast path does not decide; math-verify does.
    assert fast_grade("0,1", "1,0") is None
    assert extract_answer("we get \\boxed{3}, so x = 4 and \\boxed{5}") == "5"  # an equation between: not joined
