"""`thinkmesh grade`, `thinkmesh data list`, `thinkmesh curriculum sample`."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import problems as math_cli
from services.math.curriculum import generate


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="thinkmesh")
    math_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_grade_prints_one_line_per_input_in_order_and_survives_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps({"id": "a", "reference": "18", "prediction": "The answer is $\\boxed{18}$"}),
        json.dumps({"reference": 27.0, "prediction": "27"}),
        "{not json",
        "",
        json.dumps({"reference": "3\\sqrt{13}", "prediction": "\\sqrt{117}"}),
        json.dumps({"reference": "5"}),
        json.dumps(["reference", "prediction"]),
        json.dumps({"reference": "1/2", "prediction": "0.6"}),
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _run(["grade", "--input", str(path), "--workers", "1"]) == 1  # bad lines make the exit non-zero
    captured = capsys.readouterr()
    out = _json_lines(captured.out)
    assert [(o["line"], o["equal"]) for o in out] == [
        (1, True),
        (2, True),
        (3, False),
        (5, True),
        (6, False),
        (7, False),
        (8, False),
    ]
    assert out[0]["id"] == "a" and out[3]["method"] == "math_verify"
    assert "not JSON" in str(out[2]["error"]) and "'prediction'" in str(out[4]["error"])
    assert "error" not in out[6] and out[6]["method"] == "numeric"
    assert "3 bad line(s)" in captured.err


def test_grade_reads_stdin_and_exits_zero_when_every_line_is_good(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"reference": "025", "prediction": "25"}\n'))
    assert _run(["grade", "--input", "-"]) == 0
    assert _json_lines(capsys.readouterr().out) == [
        {"line": 1, "equal": True, "reason": "same number", "method": "numeric"}
    ]


def test_grade_reports_an_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["grade", "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.usefixtures("needs_data")
def test_data_list_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["data", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["name", "rows", "path"]
    assert any(row.split()[:2] == ["math500", "500"] for row in rows)
    assert _run(["data", "list", "--json"]) == 0
    assert {"name": "aime24", "rows": 30} in [
        {k: o[k] for k in ("name", "rows")} for o in _json_lines(capsys.readouterr().out)
    ]


def test_data_list_without_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THINKMESH_DATA_DIR", str(tmp_path / "absent"))
    assert _run(["data", "list"]) == 2
    assert "THINKMESH_DATA_DIR" in capsys.readouterr().err


def test_curriculum_sample_prints_the_generated_problems(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["curriculum", "sample", "--level", "2", "--n", "3", "--seed", "5"]) == 0
    out = _json_lines(capsys.readouterr().out)
    expected = generate(2, 3, 5)
    assert [o["id"] for o in out] == [p.id for p in expected]
    assert [o["solution"] for o in out] == [list(p.solution) for p in expected]
    assert {"id", "question", "answer", "level", "family", "solution"} <= set(out[0])
    assert _run(["curriculum", "sample", "--level", "9"]) == 2


def test_the_cli_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, services.cli.problems; "
        "print(sorted(m for m in ('sympy', 'math_verify', 'services.math.grading') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout
    assert out.strip() == "[]"
