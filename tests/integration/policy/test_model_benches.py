"""`thinkmesh bench policy|ppm` on an empty store: untrained models of the embedded size, real calls, figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support.processes import THINKMESH


@pytest.mark.parametrize(
    ("area", "extra", "rate"),
    [("policy", ["--max-new-tokens", "4"], "tokens_per_s"), ("ppm", [], "items_per_s")],
)
def test_a_model_bench_times_both_modes(tmp_path: Path, area: str, extra: list[str], rate: str) -> None:
    run = subprocess.run(
        [THINKMESH, "bench", area, "--callers", "3", "--store", str(tmp_path / "empty"), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["callers"] == 3 and report["model"].startswith(f"{area} ")
    assert report["concurrent"][rate] > 0 and report["sequential"][rate] > 0 and report["speedup"] > 0
    assert not (tmp_path / "empty").exists()  # the untrained models went to a scratch store, not the user's
