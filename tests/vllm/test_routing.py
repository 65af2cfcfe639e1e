"""Affinity routing of policy calls keeps a tree's prefix in one replica's vLLM prefix cache: two replicas on the
CPU build of vLLM, one search workload under each routing (`make test-vllm` makes the venv; skipped without it)."""

from __future__ import annotations

import pytest

from support.vllm_venv import needs_vllm_venv, run_check

pytestmark = [needs_vllm_venv, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_affinity_routing_raises_the_prefix_cache_hit_rate_over_round_robin() -> None:
    report = run_check("check_routing.py", timeout_s=1700)
    rr, affinity = report["round_robin"], report["affinity"]
    # The same workload both times: the same trees, so the same prompts, over both replicas.
    assert (rr["prompts"], rr["nodes"]) == (affinity["prompts"], affinity["nodes"])
    assert all(tokens > 0 for tokens in rr["queried_tokens"])  # round-robin used every replica
    assert affinity["hit_rate"] > rr["hit_rate"], report
    # Every prompt got the n candidates it asked for (vLLM streams an n > 1 request's candidates apart).
    assert rr["short_rows"] == affinity["short_rows"] == 0, report
