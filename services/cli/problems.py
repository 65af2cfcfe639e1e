"""`thinkmesh grade`, `thinkmesh data list` and `thinkmesh curriculum sample`.

Nothing heavy is imported at module level: `thinkmesh --help` must not load sympy.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

_BATCH = 256  # lines graded together: enough to keep every worker busy, small enough to stream


def _quiet_on_broken_pipe(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`thinkmesh data list | head` closes the pipe early: stop quietly, as other command-line tools do."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return 0

    return run


def _open(path: str) -> IO[str]:
    return sys.stdin if path == "-" else open(path, encoding="utf-8")  # closed by the caller


def _lines(handle: IO[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, parsed object) for each non-empty line, or (line number, error message)."""
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not JSON: {exc.msg}"
            continue
        if not isinstance(record, dict) or "reference" not in record or "prediction" not in record:
            yield number, "a line needs the fields 'reference' and 'prediction'"
            continue
        yield number, record


@_quiet_on_broken_pipe
def _grade(args: argparse.Namespace) -> int:
    from services.math.grading import Grader

    bad = 0
    try:
        handle = _open(args.input)
    except OSError as exc:
        print(f"thinkmesh grade: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return 2
    with handle, Grader(workers=args.workers, deadline_s=args.deadline) as grader:
        batch: list[tuple[int, dict[str, Any] | str]] = []

        def flush() -> int:
            records = [(n, r) for n, r in batch if isinstance(r, dict)]
            results = iter(grader.grade_many([(r["reference"], r["prediction"]) for _, r in records]))
            errors = 0
            for number, record in batch:
                if isinstance(record, str):
                    errors += 1
                    out: dict[str, Any] = {"line": number, "equal": False, "error": record}
                else:
                    result = next(results)
                    out = {"line": number, "equal": result.equal, "reason": result.reason, "method": result.method}
                    if "id" in record:
                        out = {"id": record["id"], **out}
                print(json.dumps(out, ensure_ascii=False), flush=False)
            sys.stdout.flush()
            batch.clear()
            return errors

        for item in _lines(handle):
            batch.append(item)
            if len(batch) >= _BATCH:
                bad += flush()
        bad += flush()
    if bad:
        print(f"thinkmesh grade: {bad} bad line(s)", file=sys.stderr)
    return 1 if bad else 0


@_quiet_on_broken_pipe
def _data_list(args: argparse.Namespace) -> int:
    from services.common.errors import NotFound
    from services.math.datasets import list_datasets

    try:
        infos = list_datasets()
    except NotFound as exc:
        print(f"thinkmesh data list: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for info in infos:
            print(json.dumps({"name": info.name, "rows": info.rows, "path": info.path}))
        return 0
    width = max(len(info.name) for info in infos) if infos else 4
    print(f"{'name':<{width}}  {'rows':>6}  path")
    for info in infos:
        print(f"{info.name:<{width}}  {info.rows:>6}  {info.path}")
    return 0


@_quiet_on_broken_pipe
def _curriculum_sample(args: argparse.Namespace) -> int:
    from services.math.curriculum import generate

    try:
        problems = generate(args.level, args.n, args.seed, families=args.family)
    except ValueError as exc:
        print(f"thinkmesh curriculum sample: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        record = problem.to_json()
        print(
            json.dumps(
                {key: record[key] for key in ("id", "question", "answer", "level", "family", "solution")}
                | {"template": problem.template, "moves": problem.moves, "distractors": problem.distractors},
                ensure_ascii=False,
            )
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    grade = subparsers.add_parser(
        "grade", help="grade predicted answers against references (JSONL in, one JSON line out per line)"
    )
    grade.add_argument(
        "--input",
        required=True,
        help="JSONL file, '-' for stdin; each line has 'reference' and 'prediction' (and maybe 'id')",
    )
    grade.add_argument("--deadline", type=float, default=5.0, help="seconds per answer before it counts as wrong")
    grade.add_argument("--workers", type=int, default=None, help="grading processes (default: one per core)")
    grade.set_defaults(func=_grade)

    data = subparsers.add_parser("data", help="the math datasets in ../shared/data (or $THINKMESH_DATA_DIR)")
    data_sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    listing = data_sub.add_parser("list", help="name, row count and path of every dataset")
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    listing.set_defaults(func=_data_list)

    curriculum = subparsers.add_parser("curriculum", help="the synthetic curriculum of the embedded default")
    curriculum_sub = curriculum.add_subparsers(dest="curriculum_command", metavar="COMMAND", required=True)
    sample = curriculum_sub.add_parser("sample", help="print generated problems with teacher solutions as JSONL")
    sample.add_argument("--level", type=int, required=True, help="difficulty level, 1..5")
    sample.add_argument("--n", type=int, default=10, help="how many problems")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--family",
        action="append",
        default=None,
        help="only this family (repeatable): arithmetic, ratios, percentages, linear, systems, number_theory, counting",
    )
    sample.set_defaults(func=_curriculum_sample)
