"""How a finished process becomes a status, and how statuses cross the wire."""

from __future__ import annotations

import signal

import pytest

from services.sandbox import child
from services.sandbox.model import Result, Status
from services.sandbox.servicer import result_from_proto, result_to_proto
from services.sandbox.zygote import classify


def _exited(code: int) -> int:
    return code << 8


@pytest.mark.parametrize(
    ("wait_status", "cpu_seconds", "expected"),
    [
        (_exited(child.EXIT_OK), 0.0, Status.OK),
        (_exited(child.EXIT_ERROR), 0.0, Status.ERROR),
        (_exited(3), 0.0, Status.ERROR),
        (_exited(child.EXIT_MEMORY), 0.0, Status.MEMORY_LIMIT),
        (_exited(child.EXIT_ISOLATION), 0.0, None),
        (signal.SIGXCPU, 2.0, Status.TIMEOUT),
        # SIGKILL at the hard CPU limit: it used its whole timeout's worth of CPU
        (signal.SIGKILL, 2.5, Status.TIMEOUT),
        (signal.SIGKILL, 0.01, Status.KILLED),
        (signal.SIGSEGV, 0.01, Status.KILLED),
    ],
)
def test_exit_statuses_map_to_outcomes(wait_status: int, cpu_seconds: float, expected: Status | None) -> None:
    status, _ = classify(wait_status, cpu_seconds, timeout_ms=2000)
    assert status is expected


def test_a_signal_death_is_explained_in_stderr() -> None:
    _, note = classify(signal.SIGSEGV, 0.0, timeout_ms=1000)
    assert "SIGSEGV" in note


@pytest.mark.parametrize("status", list(Status))
def test_results_cross_the_wire_unchanged(status: Status) -> None:
    result = Result(status, "out ✓", "err", 12, status is Status.OUTPUT_LIMIT)
    assert result_from_proto(result_to_proto(result)) == result


def test_result_dict_has_the_cli_json_keys() -> None:
    result = Result(Status.TIMEOUT, "", "", 1000, False)
    assert result.to_dict() == {
        "status": "timeout",
        "stdout": "",
        "stderr": "",
        "duration_ms": 1000,
        "truncated": False,
    }
