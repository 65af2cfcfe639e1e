"""Answer grading: is a predicted answer equal to the reference answer?

Two paths:

* a fast path in the calling process for answers that normalise to plain numbers (integers, decimals,
  thousands separators, zero padding, simple fractions, percentages, units and ``\\text{}`` stripped,
  ``x = 3``, ``\\boxed{}`` / GSM8K ``#### N`` / "the answer is" extraction). It decides only when it is
  certain: both sides are numbers, or both normalise to the same string. Typical answers never leave it.
* Hugging Face ``math-verify`` (LaTeX → sympy) for everything else, run in worker processes. Its timeouts
  use SIGALRM, which only works on a main thread and has given wrong answers inside threaded servers, and
  sympy can still hang in C code or eat memory. So each worker runs math-verify on its own main thread under
  a memory limit, the parent gives each item a deadline, and a worker that misses it or dies is killed and
  replaced: the item is graded not-equal with the reason, and the caller is never taken down.

The pool is a handful of ``multiprocessing`` workers on pipes rather than a ``ProcessPoolExecutor``: the
executor has no public way to kill one hung worker, and one crashed worker breaks the whole executor and
fails every pending item, where here only the item that caused it is lost.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

from services.math.grading.fast import extract_answer, fast_grade, normalise
from services.math.grading.pool import Pool
from services.math.grading.verdict import Check, GradeResult, Method
from services.math.grading.verify import math_verify_check

__all__ = ["Check", "GradeResult", "Grader", "Method", "extract_answer", "fast_grade", "math_verify_check", "normalise"]


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


# A longer answer is a runaway generation; its end is where an answer would be.
MAX_ANSWER_CHARS = 20_000


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # AMC's 27.0
    return str(value)[-MAX_ANSWER_CHARS:]


class Grader:
    """Grades answers; thread-safe; never hangs (per-item deadline) and never raises on any input.

    Use as a context manager or call `close()`: it shuts the worker processes down. Workers start on the
    first answer that needs math-verify, so a grader that only sees numbers never starts one.
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        deadline_s: float = 5.0,
        check: Check = math_verify_check,
        memory_limit_mb: int = 2048,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        self._size = workers or _available_cores()
        self._deadline_s = deadline_s
        self._check = check
        self._memory_limit_mb = memory_limit_mb
        self._pool: Pool | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def workers(self) -> int:
        return self._size

    def grade(self, reference: object, prediction: object) -> GradeResult:
        return self.grade_many([(reference, prediction)])[0]

    def grade_many(self, pairs: Iterable[tuple[object, object]]) -> list[GradeResult]:
        """Grade (reference, prediction) pairs, in order; the slow ones run in parallel."""
        items = [(_text(ref), _text(pred)) for ref, pred in pairs]
        results: list[GradeResult | None] = []
        slow: list[int] = []
        for index, (reference, prediction) in enumerate(items):
            verdict = self._fast(reference, prediction)
            results.append(verdict)
            if verdict is None:
                slow.append(index)
        if slow:
            for index, verdict in zip(slow, self._slow([items[i] for i in slow]), strict=True):
                results[index] = verdict
        return [r if r is not None else GradeResult(False, "not graded", "error") for r in results]

    @staticmethod
    def _fast(reference: str, prediction: str) -> GradeResult | None:
        if not reference.strip():
            return GradeResult(False, "empty reference", "empty")
        try:
            return fast_grade(reference, prediction)
        except (ValueError, ZeroDivisionError, OverflowError):  # a number too odd to compare: let sympy try
            return None

    def _slow(self, jobs: list[tuple[str, str]]) -> list[GradeResult]:
        with self._lock:
            if self._closed:
                return [GradeResult(False, "grader is closed", "error") for _ in jobs]
            if self._pool is None:
                self._pool = Pool(self._size, self._check, self._deadline_s, self._memory_limit_mb)
            return self._pool.run(jobs)

    def warm_up(self) -> None:
        """Start the workers now and wait until they are ready (benchmarks; servers before serving)."""
        self.grade("\\sqrt{4}", "2")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
