"""`thinkmesh bench <area>`: benchmarks whose figures go into docs/benchmarks.md.

Each area adds its benchmark through `register(bench_subparsers)` in its own bench module. The policy and PPM
areas are registered here: they share a store of models (untrained ones when the store is empty: speed does not
depend on training), which neither model's room may build for the other.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import tempfile
from pathlib import Path

# In the order `thinkmesh bench --help` lists them; None: the policy and PPM areas below.
BENCH_MODULES = (
    "services.sandbox.bench",
    "services.math.grading_bench",
    None,
    "services.search.eval.bench",
    "services.dev.chaos",
    "services.dev.traffic",
    "services.dev.train_bench",
)


def _models(args: argparse.Namespace) -> int:
    from services.dev.untrained import store_with_models
    from services.policy.bench import QUESTIONS

    logging.getLogger("transformers").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="thinkmesh-bench-") as scratch:
        store = store_with_models(args.store, Path(scratch), QUESTIONS, args.untrained)
        if args.area == "policy":
            from services.policy.bench import bench_policy

            report = asyncio.run(bench_policy(store, args.callers, args.max_new_tokens))
            print(f"policy {report['model']}: {args.callers} callers, {args.max_new_tokens} new tokens each")
            for mode in ("concurrent", "sequential"):
                f = report[mode]
                print(f"  {mode:<11} {f['tokens_per_s']:>8} tokens/s  ({f['tokens']} tokens in {f['seconds']} s)")
        else:
            from services.ppm.bench import bench_ppm

            report = asyncio.run(bench_ppm(store, args.callers, QUESTIONS))
            print(f"ppm {report['model']}: {args.callers} callers, one item each")
            for mode in ("concurrent", "sequential"):
                f = report[mode]
                print(f"  {mode:<11} {f['items_per_s']:>8} items/s  ({f['seconds']} s)")
        print(f"  speedup     {report['speedup']}x")
    if args.json:
        print(json.dumps(report))
    return 0


def _register_models(areas: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from services.dev.untrained import SIZES

    for area, help_text in (
        ("policy", "generated tokens/s: 16 concurrent callers vs one at a time"),
        ("ppm", "items scored/s: concurrent callers merged into batches vs one at a time"),
    ):
        bench = areas.add_parser(area, help=help_text)
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
        bench.set_defaults(func=_models)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    areas = bench.add_subparsers(dest="area", metavar="AREA", required=True)
    for name in BENCH_MODULES:
        if name is None:
            _register_models(areas)
        else:
            importlib.import_module(name).register(areas)
