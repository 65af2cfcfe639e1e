"""`thinkmesh bench traffic`, shortened: Solve calls alone, beside a round, and beside a round whose worker is
SIGKILLed, on the local stack with a real Redis and a worker pool per queue. Nothing lost, nothing searched twice,
both rounds complete (the latency ratio is a figure for docs/benchmarks.md, not asserted on a shared machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_traffic_bench_loses_and_repeats_nothing(tmp_path: Path) -> None:
    small = ["--solves", "4", "--clients", "2", "--problems", "6", "--rollouts", "2", "--in-flight", "3"]
    args = ["--state-dir", str(tmp_path), *small, "--kill-after", "2", "--visibility-timeout", "10", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "traffic", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["round_completed"] is True, report
    assert [r["results"] for r in report["rounds"]] == [6, 6]
    for key in ("solve_p99_alone_ms", "solve_p99_during_round_ms"):
        assert report[key] > 0
    # The profile covers every process of the stack, and the policy's forward passes are never free. (How much
    # more work the round adds is not asserted: a round this short may be over before the Solves begin.)
    alone, during = report["profile"]["alone"], report["profile"]["during_round"]
    services = {"sandbox", "policy", "ppm", "search", "worker-solve", "worker-round", "bench+redis"}
    assert set(alone["cpu_s"]) == set(during["cpu_s"]) == services, report["profile"]
    assert alone["cpu_s"]["policy"] > 0 and during["cpu_s"]["policy"] > 0, report["profile"]
    # Two worker pools, one per queue, as the chart runs them; the round's was the one killed and restarted.
    logs = {p.name for p in (tmp_path / "logs").glob("worker-*.log")}
    assert logs == {"worker-solve.log", "worker-round.log"}
    assert "searched job=bench/round2" in (tmp_path / "logs" / "worker-round.log").read_text()
