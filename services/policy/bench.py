"""`thinkmesh bench policy` and `thinkmesh bench ppm`: what request merging buys.

Both run a real server on 127.0.0.1 over the store's current models (or, with an empty store, an untrained
model of the embedded size: speed does not depend on training) and send the same calls twice: from 16
concurrent callers, then one at a time. Policy: generated tokens/s. PPM: items scored/s.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from services.common.store import ModelStore

QUESTIONS = [
    "Mia has 14 marbles. She gives 5 to Leo and buys 9 more. How many marbles does she have now?",
    "A shop sells pens at 3 dollars each. Sam buys 7 pens and pays with 50 dollars. How much change does he get?",
    "Ravi reads 12 pages a day for 6 days, then 20 pages on the seventh day. How many pages did he read?",
    "There are 48 apples shared equally among 6 baskets. How many apples are in 4 baskets?",
]


# Untrained architectures for speed figures when no trained model is at hand (speed does not depend on training).
SIZES = {
    "small": None,  # the embedded default (services.policy.tiny PRESETS["small"])
    # Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 heads (2 KV), intermediate 4864.
    "0.5b": {"hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2, "intermediate": 4864},
}


def _store_with_models(store_root: str | None, scratch: Path, size: str = "small") -> ModelStore:
    store = ModelStore(store_root)
    if store.current_name("policy") and store.current_name("ppm"):
        return store
    from dataclasses import replace

    from transformers import Qwen2ForCausalLM

    from services.common.store import Lineage
    from services.math import stepfmt
    from services.policy.tiny import PRESETS, tiny_config, train_tokenizer
    from services.ppm.model import ProcessRewardModel

    store = ModelStore(scratch / "store")
    tokenizer = train_tokenizer([stepfmt.render_prompt(q, []) for q in QUESTIONS * 4], PRESETS["small"].vocab_size)
    shape = SIZES[size]
    preset = PRESETS["small"] if shape is None else replace(PRESETS["small"], max_positions=2048, **shape)
    model = Qwen2ForCausalLM(tiny_config(tokenizer, preset))  # type: ignore[no-untyped-call]

    def write(directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    policy = store.publish("policy", write, Lineage(source="bench (untrained)"))

    def write_ppm(directory: Path) -> None:
        ProcessRewardModel.from_pretrained(policy.path).save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    store.publish("ppm", write_ppm, Lineage(source="bench (untrained)"))
    return store


async def _timed(calls: list[Callable[[], Awaitable[Any]]], concurrent: bool) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    if concurrent:
        results = list(await asyncio.gather(*(call() for call in calls)))
    else:
        results = [await call() for call in calls]
    return time.perf_counter() - started, results


async def bench_policy(store: ModelStore, callers: int, max_new_tokens: int) -> dict[str, Any]:
    from grpc import aio

    from services.common.server import GrpcServer, ServerSettings, Service, service_name
    from services.policy.core import Limits, PolicyCore
    from services.policy.hf_engine import HFEngine
    from services.policy.servicer import PolicyServicer
    from thinkmesh.v1 import policy_pb2, policy_pb2_grpc

    version = store.current("policy")
    assert version is not None
    core = PolicyCore(Limits(4, 64, 256, max_new_tokens, max_new_tokens))
    await core.slot.install(HFEngine(version.path, version.version, device="auto", max_batch_sequences=64))
    servicer = PolicyServicer(core)
    server = GrpcServer(
        ServerSettings(),
        [
            Service(
                service_name(policy_pb2, "PolicyService"),
                lambda s: policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, s),
            )
        ],
    )
    address = await server.start()
    try:
        async with aio.insecure_channel(address) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)

            def call(i: int) -> Callable[[], Awaitable[Any]]:
                request = policy_pb2.GenerateStepsRequest(
                    prompts=[policy_pb2.StepPrompt(question=QUESTIONS[i % len(QUESTIONS)])],
                    n=1,
                    temperature=1.0,
                    max_new_tokens=max_new_tokens,
                    seed=1 + i,
                )
                return lambda: stub.GenerateSteps(request, timeout=600)

            await stub.GenerateSteps(  # warm-up
                policy_pb2.GenerateStepsRequest(
                    prompts=[policy_pb2.StepPrompt(question=QUESTIONS[0])], n=1, max_new_tokens=min(8, max_new_tokens)
                ),
                timeout=600,
            )
            figures = {}
            for mode, concurrent in (("concurrent", True), ("sequential", False)):
                seconds, replies = await _timed([call(i) for i in range(callers)], concurrent)
                tokens = sum(c.num_tokens for r in replies for s in r.results for c in s.candidates)
                figures[mode] = {
                    "seconds": round(seconds, 3),
                    "tokens": tokens,
                    "tokens_per_s": round(tokens / seconds, 1),
                }
    finally:
        await server.stop(0)
        await core.slot.close()
    return {
        "model": f"policy {version.version}",
        "callers": callers,
        "max_new_tokens": max_new_tokens,
        **figures,
        "speedup": round(figures["concurrent"]["tokens_per_s"] / figures["sequential"]["tokens_per_s"], 2),
    }


async def bench_ppm(store: ModelStore, callers: int) -> dict[str, Any]:
    from services.ppm.scorer import HFScorer, ScoreItem

    version = store.current("ppm")
    assert version is not None
    scorer = HFScorer(version.path, version.version, device="auto", max_batch=64)
    steps = ("# total\nx = 14 - 5 + 9\n<end_of_step>", "# show\nprint(x)\n<end_of_code>", "<output>18<end_of_output>")
    items = [ScoreItem(QUESTIONS[i % len(QUESTIONS)], steps[: 1 + i % 3]) for i in range(callers)]
    try:
        await scorer.score(items[:2])  # warm-up
        figures = {}
        for mode, concurrent in (("concurrent", True), ("sequential", False)):
            calls: list[Callable[[], Awaitable[Any]]] = [functools.partial(scorer.score, [item]) for item in items]
            seconds, _ = await _timed(calls, concurrent)
            figures[mode] = {"seconds": round(seconds, 3), "items_per_s": round(len(items) / seconds, 1)}
    finally:
        await scorer.close()
    return {
        "model": f"ppm {version.version}",
        "callers": callers,
        **figures,
        "speedup": round(figures["concurrent"]["items_per_s"] / figures["sequential"]["items_per_s"], 2),
    }


def _run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="thinkmesh-bench-") as scratch:
        store = _store_with_models(args.store, Path(scratch), args.untrained)
        if args.area == "policy":
            report = asyncio.run(bench_policy(store, args.callers, args.max_new_tokens))
            print(f"policy {report['model']}: {args.callers} callers, {args.max_new_tokens} new tokens each")
            for mode in ("concurrent", "sequential"):
                f = report[mode]
                print(f"  {mode:<11} {f['tokens_per_s']:>8} tokens/s  ({f['tokens']} tokens in {f['seconds']} s)")
        else:
            report = asyncio.run(bench_ppm(store, args.callers))
            print(f"ppm {report['model']}: {args.callers} callers, one item each")
            for mode in ("concurrent", "sequential"):
                f = report[mode]
                print(f"  {mode:<11} {f['items_per_s']:>8} items/s  ({f['seconds']} s)")
        print(f"  speedup     {report['speedup']}x")
    if args.json:
        print(json.dumps(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for area, help_text in (
        ("policy", "generated tokens/s: 16 concurrent callers vs one at a time"),
        ("ppm", "items scored/s: concurrent callers merged into batches vs one at a time"),
    ):
        bench = sub.add_parser(area, help=help_text)
        bench.add_argument("--store", default=None, help="store root (default: $THINKMESH_STORE or ./.thinkmesh/store)")
        bench.add_argument("--callers", type=int, default=16)
        bench.add_argument(
            "--untrained",
            choices=sorted(SIZES),
            default="small",
            help="with an empty store: the architecture of the untrained model to time",
        )
        if area == "policy":
            bench.add_argument("--max-new-tokens", type=int, default=64)
        bench.add_argument("--json", action="store_true")
        bench.set_defaults(func=_run)
