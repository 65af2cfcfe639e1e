"""The `inplace` reload on vLLM's CPU build (`make test-vllm` makes its venv; skipped without it): one engine takes
version B's weights while 8 callers call, no call is dropped, every answer is the greedy output of the version it
names, and after the swap the engine answers as a fresh engine on B."""

from __future__ import annotations

import json

import pytest

from support.vllm_venv import needs_vllm_venv, run_check

pytestmark = [needs_vllm_venv, pytest.mark.timeout(1500)]


def test_a_new_version_goes_into_the_running_engine_under_load() -> None:
    report = run_check("check_swap.py", timeout_s=1400)
    print(json.dumps({k: v for k, v in report.items() if k != "wrong"}))
    assert report["dropped"] == []
    assert report["versions"] == ["v1", "v2"]
    assert report["loads_in_place"]  # the engine took the weights itself: no second engine was built
    assert report["a_differs_from_b"]  # else the comparisons below could not fail
    assert report["wrong"] == []  # every answer is its version's greedy output: no mixed weights, right stamps
    assert report["after_swap_equals_fresh_b"]
