"""`python -m services.dev.vllm_bench` on vLLM's CPU build at the micro shape, small: the GPU script's code
(scripts/device/vllm_bench.sh) runs end to end here. Prints its JSON line (tests/vllm/test_vllm_bench.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: vLLM's CPU build takes half the RAM otherwise
    from services.dev.vllm_bench import main

    small = ["--trees", "4", "--depth", "3", "--n", "4", "--max-new-tokens", "16", "--max-model-len", "512"]
    sys.exit(main(["--shape", "micro", *small, "--gpu-memory-utilization", "0.5", "--json"]))
