"""math-verify (LaTeX → sympy) inside a grading worker process: the check itself and the worker's main loop.
Its timeouts use SIGALRM, so it runs on the worker's main thread, under a memory limit."""

from __future__ import annotations

import contextlib
import functools
import logging
from multiprocessing.connection import Connection
from typing import Any

from services.math.grading.fast import clean, extract_answer
from services.math.grading.verdict import Check


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

    gold = _parse(_latex(reference), timeout_s) or _parse(f"${clean(reference)[0]}$", timeout_s)
    if not gold:
        return False, "reference not parsable"
    # The extracted answer first; then the cleaned one (units, \text{} gone); for free text, the text as it
    # is, for math-verify's own extraction. Later candidates only cost time when the answer is wrong.
    candidates = [_latex(prediction), f"${clean(prediction)[0]}$"]
    if extract_answer(prediction) != prediction.strip():
        candidates.append(prediction)
    for candidate in dict.fromkeys(candidates):
        parsed = _parse(candidate, timeout_s)
        if parsed and verify(gold, parsed, timeout_seconds=timeout_s):
            return True, "math-verify: equivalent"
    return False, "math-verify: not equivalent"


READY = "ready"
_WARM_UP = (
    ("1", "1"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("3\\sqrt{13}", "4\\sqrt{13}"),
    ("[1, 2)", "\\{1, 2\\}"),
    ("x^2 + 1", "y = x^2 + 1"),
)


def worker_main(conn: Connection, check: Check, timeout_s: int, memory_limit_mb: int) -> None:
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
    conn.send(READY)
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
