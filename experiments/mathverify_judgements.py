"""How often `thinkmesh grade` agrees with the public equivalence judgements of Math-Verify's test suite.

The judgements are the (gold, prediction, expected) cases of the `@pytest.mark.parametrize` tables in a checkout
of huggingface/Math-Verify (its `tests/` folder), read as data with `ast.literal_eval`; the few cases run there
with non-default options (precision, set relations) are counted as they are. Prints the agreement and every
disagreement.

    python experiments/mathverify_judgements.py /path/to/Math-Verify/tests
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

from services.math.grading import Grader


def judgements(tests: Path) -> list[dict[str, Any]]:
    cases = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize"):
                    continue
                try:
                    names = ast.literal_eval(decorator.args[0])
                    rows = ast.literal_eval(decorator.args[1])
                except ValueError:
                    continue  # a table built by code, not data
                names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
                if names[:3] != ["gold", "pred", "expected"]:
                    continue
                test = f"{path.name}::{node.name}"
                cases += [{"test": test, "gold": r[0], "pred": r[1], "want": bool(r[2])} for r in rows]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", type=Path, help="Math-Verify's tests/ folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cases = judgements(args.tests)
    with Grader() as grader:
        results = grader.grade_many([(c["gold"], c["pred"]) for c in cases])
    missed = [{**c, "reason": r.reason} for c, r in zip(cases, results, strict=True) if r.equal != c["want"]]
    agreement = 1 - len(missed) / len(cases)
    if args.json:
        print(json.dumps({"judgements": len(cases), "agreement": round(agreement, 3), "missed": missed}))
        return
    print(f"{len(cases) - len(missed)}/{len(cases)} judgements agree ({agreement:.1%})")
    for case in missed:
        print(
            f"  {case['test']}: {case['gold'][:60]!r} vs {case['pred'][-60:]!r} want {case['want']} ({case['reason']})"
        )


if __name__ == "__main__":
    main()
