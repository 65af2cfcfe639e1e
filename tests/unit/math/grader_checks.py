"""Checks that misbehave inside a grading worker. Not a test module: the workers import it by name."""

from __future__ import annotations

import os
import signal
import time


def _same(reference: str, prediction: str) -> tuple[bool, str]:
    # Tests send pairs like ("a", "\\a"): different strings (so the fast path passes them on), equal here.
    return reference.lstrip("\\") == prediction.lstrip("\\"), "compared without backslashes"


def hang(reference: str, prediction: str, timeout_s: int) -> tuple[bool, str]:
    """Hangs where no SIGALRM can stop it (the signal is ignored), as sympy can in C code."""
    if prediction == "hang":
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        time.sleep(3600)
    return _same(reference, prediction)


def crash(reference: str, prediction: str, timeout_s: int) -> tuple[bool, str]:
    """Kills its own process on one input, as a segfault in a C extension would."""
    if prediction == "crash":
        os._exit(3)
    return _same(reference, prediction)


def broken(reference: str, prediction: str, timeout_s: int) -> tuple[bool, str]:
    """Cannot even start (a missing dependency)."""
    raise ImportError("No module named 'math_verify'")
