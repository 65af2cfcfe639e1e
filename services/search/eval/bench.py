"""`thinkmesh bench search`: problems per minute with the batched tick vs one call per node, and the share of
wall time spent in the MCTS engine itself.

Both runs search the same unseen curriculum problems with the same models (the store's current policy and
PPM, in process), the same budget and the same seeds; only the way calls are made differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any


async def bench(
    store_root: str | None, problems: int, level: int, rollouts: int, candidates: int, warmup: int = 2
) -> dict[str, Any]:
    from services.common.store import ModelStore
    from services.math.curriculum import generate
    from services.search.engine.mcts import SearchConfig
    from services.search.engine.orchestrator import Orchestrator, Sampling, SearchProblem, solve_many
    from services.search.eval.local import local_backends

    tasks = [SearchProblem(p.question, p.answer) for p in generate(level, problems, seed=99_001)]
    # Untimed: the first calls pay one-off costs (a GPU's kernel loading and autotuning, lazy imports) that
    # would otherwise be charged to whichever mode runs first.
    warmup_tasks = [SearchProblem(p.question, p.answer) for p in generate(level, warmup, seed=98_001)]
    config = SearchConfig(rollouts=rollouts, candidates=candidates, q_mode="ppm", seed=1)
    report: dict[str, Any] = {
        "problems": problems,
        "level": level,
        "rollouts": rollouts,
        "candidates": candidates,
        "warmup_problems": warmup,
        "device": _device_name(),
    }
    async with local_backends(ModelStore(store_root)) as backends:
        for mode, batched in (("batched", True), ("per_node", False)):
            orchestrator = Orchestrator(backends, Sampling(temperature=0.8), batched=batched)
            if warmup_tasks:
                await solve_many(orchestrator, warmup_tasks, config)
            started = time.monotonic()
            solved, stats = await solve_many(orchestrator, tasks, config)
            wall = time.monotonic() - started
            report[mode] = {
                "seconds": round(wall, 2),
                "problems_per_minute": round(60 * problems / wall, 2),
                "engine_share": round(stats.engine_seconds / wall, 4),
                "policy_calls": stats.policy.calls,
                "sandbox_calls": stats.sandbox.calls,
                "ppm_calls": stats.ppm.calls,
                "mean_policy_batch": round(stats.policy.items / max(1, stats.policy.calls), 1),
                "stage_seconds": {
                    k: round(getattr(stats, k).seconds, 2) for k in ("policy", "sandbox", "ppm", "grade")
                },
                "nodes": sum(t.stats.nodes for s in solved for t in s.trees),
            }
    report["speedup"] = round(report["batched"]["problems_per_minute"] / report["per_node"]["problems_per_minute"], 2)
    return report


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    report = asyncio.run(bench(args.store, args.problems, args.level, args.rollouts, args.candidates, args.warmup))
    for mode in ("batched", "per_node"):
        r = report[mode]
        print(
            f"{mode:<9} {r['problems_per_minute']:>7} problems/min  ({r['seconds']} s, "
            f"{r['policy_calls']} policy calls, mean batch {r['mean_policy_batch']}, "
            f"engine {100 * r['engine_share']:.2f}% of wall)"
        )
    print(f"speedup   {report['speedup']}x  on {report['device']}")
    if args.json:
        print(json.dumps(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench_parser = sub.add_parser("search", help="problems/min: batched ticks vs one call per node")
    bench_parser.add_argument("--store", default=None)
    bench_parser.add_argument("--problems", type=int, default=16)
    bench_parser.add_argument("--level", type=int, default=2)
    bench_parser.add_argument("--rollouts", type=int, default=4)
    bench_parser.add_argument("--candidates", type=int, default=4)
    bench_parser.add_argument("--warmup", type=int, default=2, help="problems solved untimed first, in each mode")
    bench_parser.add_argument("--json", action="store_true")
    bench_parser.set_defaults(func=_run)
