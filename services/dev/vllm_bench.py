"""`python -m services.dev.vllm_bench`: the vllm backend's figures on this machine's accelerator, through the
PolicyService's own engine (services/policy/vllm_engine.py) built from its own settings:

- generated tokens/s of a search-shaped load: TREES problems expanded together, DEPTH levels deep, each call
  asking n candidate next steps of the tree's path so far (the calls of one tree share a growing prefix);
- vLLM's own prefix-cache counters over that load (the hit rate a replica sees when a tree's calls reach it);
- the time of an in-place model swap (reload_in_place: a second version of the same shape, weights perturbed),
  and that the engine serves the new version after it.

    python -m services.dev.vllm_bench --shape 0.5b --json          # a GPU: scripts/device/vllm_bench.sh
    python -m services.dev.vllm_bench --shape micro --json         # vLLM's CPU build (tests/vllm/test_vllm_bench.py)

The models are random (speed does not depend on training); the tokenizer is trained in seconds on the curriculum,
whose questions the trees expand. Random weights rarely write a step marker, so most steps run to max_new_tokens:
tokens/s is for steps of that length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COUNTERS = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")


def prefix_cache_counts() -> dict[str, float]:
    """vLLM's prefix-cache counters in this process's Prometheus registry (its stat logger writes them there),
    summed over engines; zeros where vLLM records none."""
    from prometheus_client import REGISTRY

    counts = dict.fromkeys(COUNTERS, 0.0)
    for metric in REGISTRY.collect():
        if metric.name in counts:
            counts[metric.name] += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return counts


def _publish(store_root: Path, shape: str) -> tuple[Any, Any]:
    """v1 (untrained, of the shape) and v2 (v1's weights perturbed, its tokenizer saved again, as a round
    writes a version) in a store."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.common.store import Lineage, ModelStore
    from services.dev.train_bench import write_model

    store = ModelStore(store_root)
    first = store.publish("policy", lambda d: write_model(d, shape), Lineage(base_model=shape, source="vllm bench"))

    def perturbed(directory: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(first.path)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator).to(parameter.dtype) * 0.05)
        model.save_pretrained(directory)
        AutoTokenizer.from_pretrained(first.path).save_pretrained(directory)

    second = store.publish("policy", perturbed, Lineage(base_model=first.version, source="vllm bench"))
    return first, second


async def _expand(engine: Any, questions: list[str], depth: int, n: int, max_new_tokens: int) -> dict[str, float]:
    """Every tree one level deeper per round of calls, all trees at once; the first candidate is the next step."""
    from services.policy.engine import SamplingParams, StepPrompt

    params = SamplingParams(n=n, temperature=1.0, max_new_tokens=max_new_tokens, seed=1)
    paths: list[tuple[str, ...]] = [() for _ in questions]
    tokens = calls = 0
    started = time.perf_counter()
    for _ in range(depth):
        rows = await asyncio.gather(
            *(engine.generate([StepPrompt(q, path)], params) for q, path in zip(questions, paths, strict=True))
        )
        calls += len(rows)
        tokens += sum(step.num_tokens for row in rows for step in row[0])
        paths = [(*path, row[0][0].text or "…") for path, row in zip(paths, rows, strict=True)]
    seconds = time.perf_counter() - started
    return {"calls": calls, "generated_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


async def bench(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    from services.common.vllm_args import VLLMSettings
    from services.math.curriculum import generate
    from services.policy.engine import SamplingParams, StepPrompt
    from services.policy.vllm_engine import VLLMEngine

    first, second = _publish(scratch, args.shape)
    settings = VLLMSettings(
        vllm_gpu_memory_utilization=args.gpu_memory_utilization,
        vllm_max_model_len=args.max_model_len,
        vllm_engine_args=args.engine_args,
    )
    started = time.perf_counter()
    engine = VLLMEngine(first.path, first.version, engine_args=settings.engine_args())
    report: dict[str, Any] = {"shape": args.shape, "start_s": round(time.perf_counter() - started, 2)}
    try:
        questions = [p.question for level in (2, 3) for p in generate(level, args.trees)][: args.trees]
        await _expand(engine, questions[:2], 1, args.n, 8)  # warm-up: first calls compile and allocate
        before = prefix_cache_counts()
        load = await _expand(engine, questions, args.depth, args.n, args.max_new_tokens)
        after = prefix_cache_counts()
        queries = after[COUNTERS[0]] - before[COUNTERS[0]]
        hits = after[COUNTERS[1]] - before[COUNTERS[1]]
        report |= {k: round(v, 2) for k, v in load.items()}
        report |= {"prefix_cache_queries": queries, "prefix_cache_hits": hits}
        report["prefix_cache_hit_rate"] = round(hits / queries, 4) if queries else None

        probe = [StepPrompt(questions[0], ())]
        greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=16)
        before_swap = (await engine.generate(probe, greedy))[0][0].text
        obstacle = engine.in_place_obstacle(second.path)
        if obstacle is not None:
            raise RuntimeError(f"v2 cannot go in place: {obstacle}")
        await engine.reload_in_place(second.path, second.version)
        after_swap = (await engine.generate(probe, greedy))[0][0].text
        report |= {
            "swap_s": round(engine.last_reload_s or 0.0, 3),
            "version_after_swap": engine.version,
            "output_changed_by_swap": before_swap != after_swap,
        }
    finally:
        await engine.close()
    return report


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except ImportError:
        pass
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.dev.vllm_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("micro", "small", "0.5b", "1.5b", "7b"), default="micro")
    parser.add_argument("--trees", type=int, default=32, help="problems expanded together")
    parser.add_argument("--depth", type=int, default=4, help="levels each tree is expanded")
    parser.add_argument("--n", type=int, default=8, help="candidates per call")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--engine-args", default="", help="a JSON object of other AsyncEngineArgs fields")
    parser.add_argument("--json", action="store_true", help="end with the report as one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        report = asyncio.run(bench(args, Path(scratch)))
    report["device"] = _device()
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
