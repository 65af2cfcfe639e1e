"""`thinkmesh bench chaos`, shortened: it starts the local stack on micro models, injects every fault it knows,
and loses nothing (exit 0 means every call ended as its contract says)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_the_chaos_bench_loses_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ["--state-dir", str(tmp_path), "--clients", "2", "--solves", "2", "--recovery", "45", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "chaos", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {o["scenario"]: o for o in json.loads(proc.stdout.strip().splitlines()[-1])}
    kills = {f"{name}-kill" for name in ("sandbox", "policy", "ppm", "search")}
    assert set(outcomes) == {"malformed", "huge-then-normal", "many-largest", "worker-kill", *kills}
    assert all(o["lost"] == 0 and o["ok"] > 0 for o in outcomes.values()), outcomes
    assert outcomes["malformed"]["ok"] == 4  # every service said INVALID_ARGUMENT
    assert outcomes["worker-kill"]["ok"] == 2  # both Solves answered although their worker was killed
