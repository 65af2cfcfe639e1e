"""The real math data in ``../shared/data`` (MATH500, MATH, GSM8K, AIME 2024, AMC 2023, rStar-Math eval sets).

Every file becomes a list of ``Problem`` records. The data is read where it lies (``<repo>/../shared/data``
or ``$THINKMESH_DATA_DIR``); the project never copies it. Source quirks are smoothed here, once:
GSM8K's answer is the text after ``####``; AMC's float answers (``27.0``) become ``"27"``; MATH's
``"Level 3"`` becomes ``3``; rStar's four list answers (either of two points) keep every alternative.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import InvalidInput, NotFound

DATA_DIR_ENV = "THINKMESH_DATA_DIR"
_DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str
    source: str  # the dataset name it was loaded as
    level: int | None = None
    subject: str | None = None
    alternatives: tuple[str, ...] = field(default=(), compare=False)  # further accepted answers

    @property
    def answers(self) -> tuple[str, ...]:
        """Every accepted answer, the main one first."""
        return (self.answer, *self.alternatives)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    path: str  # a file, or a glob for datasets spread over several files
    rows: int


def data_dir() -> Path:
    """Where the data lives: $THINKMESH_DATA_DIR, else ../shared/data beside the repository."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else _DEFAULT_DATA_DIR


def _require_dir() -> Path:
    root = data_dir()
    if not root.is_dir():
        raise NotFound(f"math data directory {root} does not exist (set {DATA_DIR_ENV} to where it is)")
    return root


# ------------------------------------------------------------------------------------------------ readers

Row = dict[str, Any]
Reader = Callable[[Path, str], Iterator[Problem]]


def _jsonl(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _answer_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _math_level(value: object) -> int | None:
    if isinstance(value, int):
        return value
    digits = str(value).removeprefix("Level").strip()
    return int(digits) if digits.isdigit() else None  # a few MATH problems say "Level ?"


def _math_reader(subject_field: str) -> Reader:
    """MATH-500 and the full MATH files have the same rows, except for the field naming the subject."""

    def read(path: Path, source: str) -> Iterator[Problem]:
        for row in _jsonl(path):
            answer = _answer_text(row["answer"])
            yield Problem(
                row["unique_id"], row["problem"], answer, source, _math_level(row["level"]), row[subject_field]
            )

    return read


_read_math500 = _math_reader("subject")
_read_math_full = _math_reader("type")


def _read_gsm8k(path: Path, source: str) -> Iterator[Problem]:
    for index, row in enumerate(_jsonl(path)):
        final = str(row["answer"]).rsplit("####", 1)[-1].strip()
        yield Problem(f"{source}/{index}", row["question"], final, source)


def _read_qwen_eval(path: Path, source: str) -> Iterator[Problem]:
    # AIME answers are zero-padded strings ("025"), AMC answers floats (27.0): both kept as the file says,
    # with floats that are integers written as integers. The grader treats "025" and "25" as equal.
    for row in _jsonl(path):
        yield Problem(f"{source}/{row['id']}", row["problem"], _answer_text(row["answer"]), source)


def _read_rstar(path: Path, source: str) -> Iterator[Problem]:
    with path.open(encoding="utf-8") as handle:
        rows: list[Row] = json.load(handle)
    for row in rows:
        answer = row["answer"]
        answers = [_answer_text(a) for a in answer] if isinstance(answer, list) else [_answer_text(answer)]
        yield Problem(f"{source}/{row['index']}", row["question"], answers[0], source, alternatives=tuple(answers[1:]))


@dataclass(frozen=True)
class _Spec:
    pattern: str  # relative to the data directory; may be a glob
    reader: Reader


_MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
_RSTAR_FILES = (
    "math500_test",
    "aime2024_test",
    "amc23_test",
    "GSM8K_test",
    "MATH_test",
    "collegemath_test",
    "gaokao2023en_test",
    "olympiadbench_test",
    "omni_test",
)

_SPECS: dict[str, _Spec] = {
    "math500": _Spec("math500/test.jsonl", _read_math500),
    "gsm8k_test": _Spec("gsm8k/test.jsonl", _read_gsm8k),
    "gsm8k_train": _Spec("gsm8k/train.jsonl", _read_gsm8k),
    "aime24": _Spec("aime24/test.jsonl", _read_qwen_eval),
    "amc23": _Spec("amc23/test.jsonl", _read_qwen_eval),
    "math_train": _Spec("math_full/train_*.jsonl", _read_math_full),
    "math_test": _Spec("math_full/test_*.jsonl", _read_math_full),
    **{
        f"math_{split}/{subject}": _Spec(f"math_full/{split}_{subject}.jsonl", _read_math_full)
        for split in ("train", "test")
        for subject in _MATH_SUBJECTS
    },
    **{f"rstar/{stem}": _Spec(f"rstar_eval/{stem}.json", _read_rstar) for stem in _RSTAR_FILES},
}


def dataset_names() -> list[str]:
    return list(_SPECS)


def _files(spec: _Spec, root: Path) -> list[Path]:
    return sorted(root.glob(spec.pattern))


def load_dataset(name: str) -> list[Problem]:
    """Every problem of one dataset, in file order. Raises InvalidInput for an unknown name and NotFound
    when the data directory or the dataset's files are missing."""
    spec = _SPECS.get(name)
    if spec is None:
        raise InvalidInput(f"unknown dataset {name!r}; known: {', '.join(_SPECS)}")
    root = _require_dir()
    files = _files(spec, root)
    if not files:
        raise NotFound(f"dataset {name!r}: no file matches {root / spec.pattern}")
    return [problem for path in files for problem in spec.reader(path, name)]


def read_problem_file(path: Path) -> list[Problem]:
    """A user's own problems: JSONL (or a JSON list) with `question` (or `problem`) and `answer`, optional `id`
    (or `unique_id`), `level` and `source` (or `subject`/`type`). The formats of ../shared/data are accepted as
    they are: a GSM8K answer's final number after `####`, a MATH row's `unique_id`, `Level 3` and, without an
    `answer`, the last `\\boxed{}` of its `solution`. A row without a question or an answer is an InvalidInput
    naming its line."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"problem file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        rows: list[Any] = json.loads(text) if text.lstrip().startswith("[") else _json_lines(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"problem file {path}: {exc}") from exc
    problems = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        problem = _user_problem(row, path.stem, number)
        if problem.id in seen:
            raise InvalidInput(f"problem file {path}, row {number}: id {problem.id!r} appears twice")
        seen.add(problem.id)
        problems.append(problem)
    if not problems:
        raise InvalidInput(f"problem file {path} holds no problems")
    return problems


def _json_lines(text: str) -> list[Any]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {number} is not JSON: {exc}") from exc
    return rows


def _user_problem(row: Any, stem: str, number: int) -> Problem:
    where = f"row {number}"
    if not isinstance(row, dict):
        raise InvalidInput(f"{where} is not a JSON object")
    question = row.get("question") or row.get("problem")
    answer: object = row.get("answer")
    if answer is None and isinstance(row.get("solution"), str):
        from services.math.stepfmt import extract_boxed

        answer = extract_boxed(row["solution"])
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput(f"{where} has no question (a 'question' or 'problem' field)")
    if answer is None or not str(answer).strip():
        raise InvalidInput(f"{where} has no answer (an 'answer' field, or a 'solution' with a \\boxed{{}} answer)")
    text = _answer_text(answer)
    if "####" in text:  # GSM8K: the worked solution, then the final answer
        text = text.rsplit("####", 1)[-1].strip()
    identifier = row.get("id", row.get("unique_id"))
    source = row.get("source") or row.get("subject") or row.get("type") or stem
    level = _math_level(row["level"]) if row.get("level") is not None else None
    return Problem(
        str(identifier) if identifier is not None else f"{stem}/{number - 1}",
        question,
        text,
        str(source),
        level,
        row.get("subject") or row.get("type"),
    )


def load_problems(spec: str) -> list[Problem]:
    """A dataset of ../shared/data by name, or a problem file by path (`read_problem_file`)."""
    if spec in _SPECS:
        return load_dataset(spec)
    path = Path(spec)
    if path.suffix in (".jsonl", ".json") or path.exists():
        return read_problem_file(path)
    raise InvalidInput(f"{spec!r} is neither a dataset ({', '.join(_SPECS)}) nor a problem file")


def list_datasets() -> list[DatasetInfo]:
    """Name, location and row count of every dataset whose files are present."""
    root = _require_dir()
    infos = []
    for name, spec in _SPECS.items():
        files = _files(spec, root)
        if files:
            rows = sum(1 for path in files for _ in spec.reader(path, name))
            infos.append(DatasetInfo(name, str(root / spec.pattern), rows))
    return infos
