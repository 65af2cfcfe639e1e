"""`thinkmesh bench grading`: gradings per second on real answers rewritten in equivalent and wrong forms.

The rewrites live here (the tests use them too): each answer of a real dataset, written the way a model or
another source might write it (boxed, in a sentence, zero-padded, as a decimal, with units, ...) and in
forms that must not match (a different number, a changed digit).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from fractions import Fraction

Pair = tuple[str, str, bool]  # reference, prediction, expected equal

_INT = re.compile(r"^-?\d+$")
_FRACTION = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$|^(-?\d+)/(\d+)$")

_SIMPLE_FRAC = re.compile(r"(?<!\d)(?<!\d )\\frac\{([^{}]+)\}\{([^{}]+)\}")

BENCH_DATASETS = ("math500", "gsm8k_test", "aime24", "amc23")


def _as_fraction(answer: str) -> Fraction | None:
    match = _FRACTION.match(answer.strip())
    if match is None:
        return None
    if match.group(2) is not None:
        sign = -1 if match.group(1) else 1
        numerator, denominator = sign * int(match.group(2)), int(match.group(3))
    else:
        numerator, denominator = int(match.group(4)), int(match.group(5))
    return Fraction(numerator, denominator) if denominator else None


def _terminates(value: Fraction) -> bool:
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def equivalent_forms(answer: str) -> list[str]:
    """Ways to write `answer` that a grader must accept."""
    answer = answer.strip()
    forms = [
        answer,
        f"\\boxed{{{answer}}}",
        f"The answer is ${answer}$.",
        f"So the final answer is $\\boxed{{{answer}}}$.",
    ]
    compact = answer.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+", answer) else answer
    if _INT.match(compact):
        n = int(compact)
        forms += [f"{n}.0", f"x = {n}", f"{n} \\text{{ units}}", f"\\frac{{{2 * n}}}{{2}}"]
        if n >= 0:
            forms.append(f"0{n}")  # AIME-style zero padding
        if abs(n) >= 1000:
            forms.append(f"{n:,}")
        return forms
    value = _as_fraction(answer)
    if value is not None:
        forms += [f"{value.numerator}/{value.denominator}", f"\\dfrac{{{value.numerator}}}{{{value.denominator}}}"]
        if _terminates(value):
            forms.append(str(float(value)))
        return forms
    if "\\frac" in answer:
        forms.append(answer.replace("\\frac", "\\dfrac"))
        # \frac{A}{B} -> ((A)/(B)): a different string, so math-verify (not string equality) must decide
        forms.append(_SIMPLE_FRAC.sub(r"((\1)/(\2))", answer))
    if "\\left" in answer or "\\right" in answer:
        forms.append(answer.replace("\\left", "").replace("\\right", ""))
    return forms


def wrong_forms(answer: str) -> list[str]:
    """Answers that differ from `answer`: another number, or one digit changed."""
    answer = answer.strip()
    compact = answer.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+", answer) else answer
    if _INT.match(compact):
        n = int(compact)
        return [str(n + 1), f"\\boxed{{{n - 1}}}"]
    value = _as_fraction(answer)
    if value is not None:
        forms = [f"\\frac{{{value.numerator + value.denominator}}}{{{value.denominator}}}"]
        if value.numerator not in (0, value.denominator, -value.denominator):
            forms.append(f"\\frac{{{value.denominator}}}{{{value.numerator}}}")
        return forms
    digit = re.search(r"\d", answer)
    if digit is None:
        return [f"{answer}+1"]
    changed = str(int(digit.group()) + 1) if digit.group() != "9" else "8"
    return [answer[: digit.start()] + changed + answer[digit.end() :]]


def pairs_for(answers: list[str]) -> list[Pair]:
    pairs: list[Pair] = []
    for answer in answers:
        pairs += [(answer, form, True) for form in equivalent_forms(answer)]
        pairs += [(answer, form, False) for form in wrong_forms(answer)]
    return pairs


def dataset_pairs(name: str) -> list[Pair]:
    from services.math.datasets import load_dataset

    return pairs_for([problem.answer for problem in load_dataset(name)])


def _measure(args: argparse.Namespace, pairs: list[Pair], *, one_by_one: bool) -> dict[str, object]:
    """Grade `pairs` with a fresh, warmed-up grader (so no figure profits from another's parse cache)."""
    from services.math.grading import Grader, fast_grade

    with Grader(workers=args.workers, deadline_s=args.deadline) as grader:
        started = time.perf_counter()
        grader.warm_up()
        boot_s = time.perf_counter() - started
        started = time.perf_counter()
        if one_by_one:
            results = [grader.grade(ref, pred) for ref, pred, _ in pairs]
        else:
            results = grader.grade_many([(ref, pred) for ref, pred, _ in pairs])
        elapsed = time.perf_counter() - started
    agree = sum(r.equal == want for r, (*_, want) in zip(results, pairs, strict=True))
    fast = sum(1 for ref, pred, _ in pairs if fast_grade(ref, pred) is not None)
    return {
        "pairs": len(pairs),
        "gradings_per_s": round(len(pairs) / elapsed, 1),
        "fast_path_share": round(fast / len(pairs), 3),
        "agree_with_expected": f"{agree}/{len(pairs)}",
        "timeouts": sum(1 for r in results if r.method == "timeout"),
        "worker_boot_s": round(boot_s, 2),
    }


def _run(args: argparse.Namespace) -> int:
    from services.math.grading import fast_grade

    every = [pair for name in BENCH_DATASETS for pair in dataset_pairs(name)]
    random.Random(args.seed).shuffle(every)
    typical = every[: args.pairs]
    slow = [pair for pair in every if fast_grade(pair[0], pair[1]) is None]  # what only math-verify decides
    figures: dict[str, object] = {
        "workers": args.workers,
        "pool": f"{len(every)} pairs from {', '.join(BENCH_DATASETS)}; {len(slow)} of them need math-verify",
        "typical_batch": _measure(args, typical, one_by_one=False),
        "typical_one_by_one": _measure(args, typical, one_by_one=True),
        "math500_batch": _measure(args, dataset_pairs("math500"), one_by_one=False),
        "math_verify_only_batch": _measure(args, slow, one_by_one=False),
    }
    print(json.dumps(figures, indent=2))
    return 0


def register(bench_subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = bench_subparsers.add_parser(
        "grading", help="answer gradings per second on real dataset answers (needs ../shared/data)"
    )
    bench.add_argument("--pairs", type=int, default=4000, help="typical pairs: a random sample of the whole pool")
    bench.add_argument("--workers", type=int, default=2, help="grading worker processes")
    bench.add_argument("--deadline", type=float, default=5.0, help="per-item deadline in seconds")
    bench.add_argument("--seed", type=int, default=0)
    bench.set_defaults(func=_run)
