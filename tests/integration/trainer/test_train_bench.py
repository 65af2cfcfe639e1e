"""The GPU script of the training benchmark (scripts/device/train_bench.sh) runs here too: on a CPU it trains the
micro shape once in process and once on two DDP processes, and prints the sizing table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_gpu_script_runs_on_a_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "STEPS": "2", "SHAPE": "micro", "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", "scripts/device/train_bench.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plain = json.loads((tmp_path / "plain.json").read_text())
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert (plain["world_size"], plain["sharding"], ddp["world_size"], ddp["sharding"]) == (1, "none", 2, "ddp")
    for report in (plain, ddp):
        assert report["steps"] == 2 and report["tokens_per_s"] > 0 and report["peak_memory_gib"] > 0
        # fp32 weights and AdamW's two fp32 moments: the 12 bytes a parameter the sizing arithmetic counts.
        assert report["state_bytes_per_parameter"] == 12.0
    assert "| Qwen2.5-Math-7B |" in (tmp_path / "sizing.md").read_text()
