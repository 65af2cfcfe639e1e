"""`thinkmesh compare`: the exact McNemar test on two evaluations of the same problems, and its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main
from services.search.engine.backends import Backends
from services.search.eval.compare import compare, read_results, sign_test
from services.search.eval.evaluate import EvalProblem, EvalSettings, evaluate, write_results
from support.scripted import ScriptedBackends


def test_sign_test_is_the_exact_two_sided_binomial() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert sign_test(2, 10) == sign_test(10, 2)
    assert sign_test(3, 3) == 1.0
    with pytest.raises(ValueError):
        sign_test(-1, 2)


def test_compare_counts_only_the_problems_both_evaluated() -> None:
    a = {"p1": True, "p2": True, "p3": False, "p4": True, "only-a": True}
    b = {"p1": True, "p2": False, "p3": True, "p4": False, "only-b": False}
    result = compare(a, b)
    assert (result.n, result.only_a, result.only_b, result.unmatched) == (4, 2, 1, 2)
    assert (result.accuracy_a, result.accuracy_b) == (0.75, 0.5)
    assert result.p_value == sign_test(2, 1)
    with pytest.raises(ValueError, match="no problem in common"):
        compare({"x": True}, {"y": True})


async def test_results_files_round_trip_and_reject_what_cannot_be_compared(tmp_path: Path) -> None:
    problems = [
        EvalProblem("p1", "Tom has 3 apples and buys 5 more. How many?", "8"),
        EvalProblem("p2", "Tom has 3 apples and buys 5 more. How many now?", "9"),
    ]
    scripted = ScriptedBackends()
    results, _ = await evaluate(
        problems, Backends(generator=scripted, runner=scripted, scorer=scripted, grader=scripted), EvalSettings()
    )
    path = tmp_path / "greedy.jsonl"
    write_results(path, results)
    assert read_results([path]) == {r.id: r.correct for r in results}
    with pytest.raises(ValueError, match="appears twice"):
        read_results([path, path])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "p1", "correct": true}\n{"id": "p2"}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2"):
        read_results([broken])


def test_the_cli_pools_comma_separated_files_and_exits_2_on_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def results(name: str, verdicts: dict[str, bool]) -> str:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"id": i, "correct": ok}) + "\n" for i, ok in verdicts.items()))
        return str(path)

    a = results("a3.jsonl", {"L3-1": True, "L3-2": True}) + "," + results("a4.jsonl", {"L4-1": True})
    b = results("b3.jsonl", {"L3-1": False, "L3-2": True}) + "," + results("b4.jsonl", {"L4-1": False})
    assert main(["compare", a, b, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["n"], report["only_a"], report["only_b"]) == (3, 2, 0)
    assert report["p_value"] == pytest.approx(0.5)
    assert main(["compare", a, str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
