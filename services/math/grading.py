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

import contextlib
import functools
import logging
import multiprocessing
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from services.math.stepfmt import extract_boxed

log = logging.getLogger(__name__)

Method = Literal["numeric", "string", "math_verify", "timeout", "error", "empty"]
# A check runs in a worker: (reference, prediction, timeout in whole seconds) -> (equal, reason).
Check = Callable[[str, str, int], tuple[bool, str]]


@dataclass(frozen=True)
class GradeResult:
    equal: bool
    reason: str
    method: Method


# ------------------------------------------------------------------------------------------- normalisation

_ANSWER_IS = re.compile(r"answer\s*(?:is\b|:)\s*:?", re.IGNORECASE)
_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|mathbf|textit)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;:> ]|\\q?quad|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?=[\\()\[\]{}|.])|\\(?:big|Big|bigg|Bigg)[lr]?")
_VARIABLE_EQUALS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_NUMBER_WITH_UNIT = re.compile(r"^([-+]?[\d.,/]+)\s*[a-zA-Z][a-zA-Z .]+$")  # "18 dollars", "5 cm"
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_WORDS = re.compile(r"^[A-Za-z]{2,}(?: [A-Za-z]+)*$")
_INTEGER = re.compile(r"^[-+]?\d+$")
# At most a 3-digit exponent: Fraction("1e99999999") would build a 100-million-digit integer in the caller.
_DECIMAL = re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d{1,3})?$")
_SLASH_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRACTION = re.compile(r"^([-+]?)\\frac\s*(?:\{\s*([-+]?\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))$")


def extract_answer(text: str) -> str:
    """The answer inside free text: the last ``\\boxed{}``, GSM8K's ``#### N``, or what follows "answer is"."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    matches = list(_ANSWER_IS.finditer(text))
    if matches:  # the last "answer is" / "answer:" wins
        last = matches[-1]
        rest = text[last.end() :].strip().rstrip(".").strip()
        if rest:
            return rest
    return text.strip()


@dataclass(frozen=True)
class _Normalised:
    text: str  # for string comparison: no spaces; words case-folded
    number: Fraction | None  # set when the answer is a plain number
    exact: bool  # False for decimals that may be rounded (0.33 for 1/3)
    percent: bool


def normalise(answer: str) -> str:
    """The cleaned-up answer string used for comparison (exposed for tests and the CLI)."""
    return _normalise(answer).text


def _clean(answer: str) -> tuple[str, bool]:
    text = extract_answer(answer)
    text = text.replace("\\$", "").replace("$", "")
    text = _SPACING.sub(" ", text)
    text = text.replace("{,}", ",").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _LEFT_RIGHT.sub("", text)
    text = _DEGREES.sub("", text)
    for _ in range(3):  # nested \text{\textbf{...}}
        text = _TEXT_COMMANDS.sub(r"\1", text)
    percent = "%" in text
    text = text.replace("\\%", "").replace("%", "")
    text = text.strip().rstrip(".").strip()
    text = _VARIABLE_EQUALS.sub("", text)
    unit = _NUMBER_WITH_UNIT.match(text)
    if unit is not None:
        text = unit.group(1)
    return text.strip(), percent


def _normalise(answer: str) -> _Normalised:
    text, percent = _clean(answer)
    number, exact = _to_number(text)
    compact = re.sub(r"\s+", "", text)
    if _WORDS.match(text):  # "Evelyn" / "evelyn", "Yes" / "yes"; but never x vs X or \Pi vs \pi
        compact = compact.casefold()
    return _Normalised(compact, number, exact, percent)


def _to_number(text: str) -> tuple[Fraction | None, bool]:
    compact = text.replace(" ", "")
    if _THOUSANDS.match(compact):
        compact = compact.replace(",", "")
    if _INTEGER.match(compact):
        return Fraction(int(compact)), True
    if _DECIMAL.match(compact):
        value = Fraction(compact)
        return value, value.denominator == 1  # "27.0" is exact; "0.33" may be a rounded 1/3
    slash = _SLASH_FRACTION.match(compact)
    if slash is not None and int(slash.group(2)) != 0:
        return Fraction(int(slash.group(1)), int(slash.group(2))), True
    latex = _LATEX_FRACTION.match(compact)
    if latex is not None:
        sign, num_braced, num_digit, den_braced, den_digit = latex.groups()
        numerator, denominator = int(num_braced or num_digit), int(den_braced or den_digit)
        if denominator != 0:
            return Fraction(-numerator if sign == "-" else numerator, denominator), True
    return None, False


def fast_grade(reference: str, prediction: str) -> GradeResult | None:
    """The verdict when it is certain without sympy, else None (the caller then uses math-verify)."""
    ref, pred = _normalise(reference), _normalise(prediction)
    if not pred.text:
        return GradeResult(False, "no answer in the prediction", "empty")
    if ref.number is not None and pred.number is not None:
        a, b = ref.number, pred.number
        if a == b:
            return GradeResult(True, "same number", "numeric")
        if (ref.percent or pred.percent) and (a == b * 100 or a * 100 == b):
            return GradeResult(True, "same number as a percentage", "numeric")
        if not (ref.exact and pred.exact) and abs(a - b) <= max(Fraction(1), abs(a), abs(b)) / 1000:
            return None  # a rounded decimal close to the other side: math-verify's rounding rules decide
        return GradeResult(False, f"different numbers ({_show(a)} vs {_show(b)})", "numeric")
    if ref.text == pred.text:
        return GradeResult(True, "same answer after normalisation", "string")
    return None


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


# ------------------------------------------------------------------------------------- math-verify (worker)


def _latex(answer: str) -> str:
    text = extract_answer(answer).strip()
    return text if "$" in text else f"${text}$"


@functools.lru_cache(maxsize=4096)
def _parse(text: str, timeout_s: int) -> list[Any]:
    # Cached per worker: search grades many candidate answers against the same reference, and models
    # repeat answers. A parse that timed out is cached as unparsable, which is what it is.
    from math_verify import parse

    parsed: list[Any] = parse(text, parsing_timeout=timeout_s)
    return parsed


def math_verify_check(reference: str, prediction: str, timeout_s: int) -> tuple[bool, str]:
    """Compare with math-verify. Runs inside a grading worker (main thread: its timeouts use SIGALRM)."""
    from math_verify import verify

    gold = _parse(_latex(reference), timeout_s) or _parse(f"${_clean(reference)[0]}$", timeout_s)
    if not gold:
        return False, "reference not parsable"
    # The extracted answer first; then the cleaned one (units, \text{} gone); for free text, the text as it
    # is, for math-verify's own extraction. Later candidates only cost time when the answer is wrong.
    candidates = [_latex(prediction), f"${_clean(prediction)[0]}$"]
    if extract_answer(prediction) != prediction.strip():
        candidates.append(prediction)
    for candidate in dict.fromkeys(candidates):
        parsed = _parse(candidate, timeout_s)
        if parsed and verify(gold, parsed, timeout_seconds=timeout_s):
            return True, "math-verify: equivalent"
    return False, "math-verify: not equivalent"


_READY = "ready"
_WARM_UP = (
    ("1", "1"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("3\\sqrt{13}", "4\\sqrt{13}"),
    ("[1, 2)", "\\{1, 2\\}"),
    ("x^2 + 1", "y = x^2 + 1"),
)


def _worker_main(conn: Connection, check: Check, timeout_s: int, memory_limit_mb: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if memory_limit_mb > 0:
        with contextlib.suppress(ImportError, ValueError, OSError):
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every timeout as a warning
    try:
        # Import math-verify and sympy, and pay the first-parse costs of the LaTeX grammar (≈0.3 s), before
        # reporting ready: the first real item must not spend its deadline on them.
        for reference, prediction in _WARM_UP:
            check(reference, prediction, timeout_s)
    except BaseException as exc:
        conn.send(("boot failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(_READY)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            result = check(job[0], job[1], timeout_s)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # math-verify's TimeoutException is a BaseException
            result = (False, f"grader error: {type(exc).__name__}: {exc}")
        conn.send(result)


# ------------------------------------------------------------------------------------------ the worker pool


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    job: int | None = None
    deadline: float = 0.0


class _Pool:
    """Workers on pipes; `run` grades a batch, one item per worker at a time, each under its deadline."""

    BOOT_TIMEOUT_S = 120.0
    MAX_BOOT_FAILURES = 3

    def __init__(self, size: int, check: Check, deadline_s: float, memory_limit_mb: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # no fork: the caller may have threads
        self._size = size
        self._check = check
        self._deadline_s = deadline_s
        self._timeout_s = max(1, int(deadline_s / 3))  # math-verify's own timeouts fire before the kill
        self._memory_limit_mb = memory_limit_mb
        self._workers: list[_Worker] = []
        self._boot_failures = 0
        self._boot_error = ""

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            name="thinkmesh-grader",
            daemon=True,
            args=(child, self._check, self._timeout_s, self._memory_limit_mb),
        )
        process.start()
        child.close()  # so the parent sees EOF when the worker dies
        return _Worker(process, parent, time.monotonic())

    def _kill(self, worker: _Worker) -> None:
        with contextlib.suppress(Exception):
            worker.process.kill()
            worker.process.join(timeout=2)
        with contextlib.suppress(Exception):
            worker.conn.close()

    def _replace(self, worker: _Worker) -> None:
        self._kill(worker)
        self._workers[self._workers.index(worker)] = self._spawn()

    def start(self) -> None:
        while len(self._workers) < self._size:
            self._workers.append(self._spawn())

    @property
    def broken(self) -> bool:
        return self._boot_failures >= self.MAX_BOOT_FAILURES

    def run(self, jobs: Sequence[tuple[str, str]]) -> list[GradeResult]:
        results: list[GradeResult | None] = [None] * len(jobs)
        queue = deque(range(len(jobs)))
        if not self.broken:
            self.start()
        while queue or any(w.job is not None for w in self._workers):
            if self.broken:  # e.g. math-verify is not installed: fail fast instead of respawning forever
                reason = f"grader unavailable: workers fail to start ({self._boot_error})"
                for index in queue:
                    results[index] = GradeResult(False, reason, "error")
                queue.clear()
                if not any(w.job is not None for w in self._workers):
                    break
            self._dispatch(jobs, queue)
            self._collect(results)
        return [r if r is not None else GradeResult(False, "not graded", "error") for r in results]

    def _dispatch(self, jobs: Sequence[tuple[str, str]], queue: deque[int]) -> None:
        for worker in list(self._workers):
            if not queue or not worker.ready or worker.job is not None:
                continue
            index = queue.popleft()
            try:
                worker.conn.send(jobs[index])
            except (OSError, ValueError):  # it died while idle: not this item's fault
                queue.appendleft(index)
                self._replace(worker)
                continue
            worker.job, worker.deadline = index, time.monotonic() + self._deadline_s

    def _collect(self, results: list[GradeResult | None]) -> None:
        now = time.monotonic()
        limits = [
            w.started + self.BOOT_TIMEOUT_S if not w.ready else w.deadline
            for w in self._workers
            if not w.ready or w.job is not None
        ]
        timeout = max(0.0, min(limits) - now) if limits else 0.0
        ready = set(wait([w.conn for w in self._workers], timeout=timeout))
        for worker in list(self._workers):
            if worker.conn in ready:
                self._receive(worker, results)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.ready and worker.job is not None and now >= worker.deadline:
                results[worker.job] = GradeResult(False, f"timed out after {self._deadline_s:g} s", "timeout")
                log.warning("grading worker %s missed its deadline; replacing it", worker.process.pid)
                self._replace(worker)
            elif not worker.ready and now >= worker.started + self.BOOT_TIMEOUT_S:
                self._boot_failed(worker, "did not start in time")

    def _receive(self, worker: _Worker, results: list[GradeResult | None]) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=2)
            code = worker.process.exitcode
            if worker.job is not None:
                results[worker.job] = GradeResult(False, f"grading worker died (exit code {code})", "error")
                self._replace(worker)
            elif worker.ready:  # died while idle (the OOM killer, say): nobody's fault, start another
                self._replace(worker)
            else:
                self._boot_failed(worker, f"exit code {code}")
            return
        if message == _READY:
            worker.ready = True
            self._boot_failures = 0
        elif isinstance(message, tuple) and message and message[0] == "boot failed":
            self._boot_failed(worker, str(message[1]))
        elif worker.job is not None:
            equal, reason = message
            results[worker.job] = GradeResult(bool(equal), str(reason), "math_verify")
            worker.job = None

    def _boot_failed(self, worker: _Worker, why: str) -> None:
        self._boot_failures += 1
        self._boot_error = why
        log.error("grading worker failed to start: %s", why)
        if self.broken:
            self._kill(worker)
            self._workers.remove(worker)
        else:
            self._replace(worker)

    def close(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(Exception):
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=1)
            if worker.process.is_alive():
                self._kill(worker)
            with contextlib.suppress(Exception):
                worker.conn.close()
        self._workers.clear()


# ----------------------------------------------------------------------------------------------- the API


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
        self._pool: _Pool | None = None
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
                self._pool = _Pool(self._size, self._check, self._deadline_s, self._memory_limit_mb)
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
