"""`thinkmesh bench <area>`: benchmarks whose figures go into docs/benchmarks.md.

Each area adds its benchmark through `register(bench_subparsers)` in its own bench module.
"""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES = (
    "services.sandbox.bench",
    "services.math.grading_bench",
    "services.policy.bench",
    "services.search.eval.bench",
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    areas = bench.add_subparsers(dest="area", metavar="AREA", required=True)
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(areas)
