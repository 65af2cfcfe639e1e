"""The `inplace` reload on vLLM's CPU build: version A → B inside one running engine while 8 callers keep calling.

Runs the PolicyService's own pieces (PolicyCore, ModelSource following the store, the vllm engine loader and its
in-place reload: services/policy/main.py) and prints one JSON line: every call's outcome, the version that
answered it and whether its greedy output is that version's, the swap's time, and a fresh engine's greedy output
on B. vLLM starts its engine core with the spawn method, so this runs as a script (tests/vllm/test_swap.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

CALLERS = 8


async def check(root: Path) -> dict[str, object]:
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from services.common.hot_reload import ModelSource
    from services.common.store import Lineage, ModelStore
    from services.common.vllm_args import VLLMSettings
    from services.policy.core import Limits, PolicyCore
    from services.policy.engine import SamplingParams, StepPrompt
    from services.policy.main import engine_loader, in_place_loader
    from services.policy.settings import PolicySettings
    from services.policy.vllm_engine import VLLMEngine
    from support.tiny_models import QUESTION, STEPS, publish_micro_models

    store = ModelStore(root)
    a, _ = publish_micro_models(store, seed=0)

    # B: what a round publishes — the same architecture and tokenizer, other weights.
    def write_b(directory: Path) -> None:
        torch.manual_seed(1)
        model = Qwen2ForCausalLM.from_pretrained(a.path)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
        model.save_pretrained(directory)
        AutoTokenizer.from_pretrained(a.path).save_pretrained(directory)

    b = store.publish("policy", write_b, Lineage(base_model=f"policy {a.version}", source="test"), make_current=False)

    settings = PolicySettings(
        backend="vllm",
        reload="inplace",
        vllm=VLLMSettings(vllm_gpu_memory_utilization=0.5, vllm_max_model_len=512),
    )
    core = PolicyCore(Limits(default_n=1, max_n=4, max_prompts=8, default_max_new_tokens=16, max_new_tokens=16))
    source = ModelSource(
        core.slot,
        "policy",
        lambda: store.current_name("policy"),
        engine_loader(settings, store),
        interval_s=0.2,
        reload=settings.reload_mode,
        reload_in_place=in_place_loader(store),
    )
    prompts = [StepPrompt(QUESTION.replace("3", str(n)), STEPS[:k]) for n in (3, 4, 6, 7) for k in (0, 1)]
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=16)

    async def texts(generate_on: PolicyCore | VLLMEngine) -> list[str]:
        if isinstance(generate_on, PolicyCore):
            results = (await generate_on.generate(prompts, greedy)).results
        else:
            results = await generate_on.generate(prompts, greedy)
        return [row[0].text for row in results]

    await source.start()
    reference_a = await texts(core)

    calls: list[dict[str, object]] = []
    stop = asyncio.Event()

    async def caller(index: int) -> None:
        turn = index
        while not stop.is_set():
            prompt = prompts[turn % len(prompts)]
            turn += 1
            started = time.perf_counter()
            try:
                generation = await core.generate([prompt], greedy, timeout_s=120)
            except Exception as error:  # a dropped call: the test's failure
                calls.append({"ok": False, "error": repr(error)})
                continue
            calls.append(
                {
                    "ok": True,
                    "version": generation.model_version,
                    "prompt": prompts.index(prompt),
                    "text": generation.results[0][0].text,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                }
            )

    callers = [asyncio.create_task(caller(index)) for index in range(CALLERS)]
    while len(calls) < 3 * CALLERS:
        await asyncio.sleep(0.05)
    store.promote("policy", b.version)
    async with asyncio.timeout(600):
        while sum(1 for c in calls if c.get("version") == b.version) < 3 * CALLERS:
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*callers)
    async with core.slot.lease() as engine:
        swap_s = getattr(engine, "last_reload_s", None)
    after_swap = await texts(core)
    await source.stop()

    fresh = VLLMEngine(b.path, b.version, engine_args=settings.vllm.engine_args())
    try:
        reference_b = await texts(fresh)
    finally:
        await fresh.close()

    reference = {a.version: reference_a, b.version: reference_b}
    answered = [c for c in calls if c["ok"]]
    return {
        "calls": len(calls),
        "dropped": [c["error"] for c in calls if not c["ok"]],
        "versions": sorted({str(c["version"]) for c in answered}),
        "wrong": [c for c in answered if c["text"] != reference[str(c["version"])][int(str(c["prompt"]))]],
        "after_swap_equals_fresh_b": after_swap == reference_b,
        "a_differs_from_b": reference_a != reference_b,
        "swap_s": swap_s,
        "slowest_call_ms": max(float(str(c["ms"])) for c in answered),
        "loads_in_place": swap_s is not None,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: vLLM's CPU build takes half the RAM otherwise
    with tempfile.TemporaryDirectory() as scratch:
        print(json.dumps(asyncio.run(check(Path(scratch)))))
