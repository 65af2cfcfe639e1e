"""The vLLM CPU build's venv (`make test-vllm` makes it) and how the tests in tests/vllm run a check in it.

vLLM starts its engine core with the spawn method, so each check is a script under a `__main__` guard, run by the
venv's python; it prints one JSON line with what it saw, which the test reads.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(os.environ.get("THINKMESH_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))

# Every test module in tests/vllm starts with `pytestmark = needs_vllm_venv`.
needs_vllm_venv = pytest.mark.skipif(not PYTHON.exists(), reason="no vLLM venv: run `make test-vllm`")


def run_check(script: str, timeout_s: float) -> dict[str, Any]:
    """Run tests/vllm/`script` in the venv; its last JSON line. Fails the test with the script's stderr."""
    done = subprocess.run(
        [str(PYTHON), str(REPO / "tests" / "vllm" / script)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(lines[-1])
    return report
