"""The `vllm` backend on the CPU build of vLLM (`make test-vllm` makes its venv; skipped without it)."""

from __future__ import annotations

import re

import pytest

from support.vllm_venv import PYTHON, REPO, needs_vllm_venv, run_check

pytestmark = [needs_vllm_venv, pytest.mark.timeout(1200)]


def test_vllm_engine_generates_n_candidates_per_prompt() -> None:
    report = run_check("check_vllm_engine.py", timeout_s=1100)
    assert report["shape"] == [3, 3]
    assert report["version"] == "v1"
    assert all(0 < tokens <= 16 for tokens in report["tokens"])
    assert set(report["ends"]) <= {"step", "code", "answer", "length"}
    # One vLLM release: the CPU build tested here is the release the GPU policy image installs from the lock.
    locked = re.search(r"^vllm==(\S+)", (REPO / "requirements" / "constraints.txt").read_text(), re.MULTILINE)
    assert locked is not None
    assert report["vllm"] == locked.group(1), f"{PYTHON} has vLLM {report['vllm']}, the lock pins {locked.group(1)}"
