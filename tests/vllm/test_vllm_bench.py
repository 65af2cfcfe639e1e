"""The GPU script's bench (services/dev/vllm_bench.py) on vLLM's CPU build (`make test-vllm`; skipped without its
venv): it generates, reads vLLM's prefix-cache counters and swaps a version in place."""

from __future__ import annotations

import pytest

from support.vllm_venv import needs_vllm_venv, run_check

pytestmark = [needs_vllm_venv, pytest.mark.timeout(1200)]


def test_the_vllm_bench_measures_throughput_cache_hits_and_a_swap() -> None:
    report = run_check("check_vllm_bench.py", timeout_s=1100)
    assert report["calls"] == 4 * 3
    assert report["tokens_per_s"] > 0
    # The calls of a tree share their prefix: a cache that is on and counted shows hits.
    assert report["prefix_cache_queries"] > 0
    assert 0 < report["prefix_cache_hit_rate"] <= 1
    assert report["version_after_swap"] == "v2"
    assert report["output_changed_by_swap"]  # the engine answers with the new weights
    assert report["swap_s"] > 0
