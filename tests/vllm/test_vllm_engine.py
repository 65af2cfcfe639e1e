"""The `vllm` backend on the CPU build of vLLM (`make test-vllm` makes its venv; skipped without it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(os.environ.get("THINKMESH_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))

pytestmark = [
    pytest.mark.skipif(not PYTHON.exists(), reason="no vLLM venv: run `make test-vllm`"),
    pytest.mark.timeout(1200),
]


def test_vllm_engine_generates_n_candidates_per_prompt() -> None:
    done = subprocess.run(
        [str(PYTHON), str(REPO / "tests" / "vllm" / "check_vllm_engine.py")],
        capture_output=True,
        text=True,
        timeout=1100,
        cwd=REPO,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1])
    assert report["shape"] == [3, 3]
    assert report["version"] == "v1"
    assert all(0 < tokens <= 16 for tokens in report["tokens"])
    assert set(report["ends"]) <= {"step", "code", "answer", "length"}
