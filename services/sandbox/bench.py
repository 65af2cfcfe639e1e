"""`thinkmesh bench sandbox`: the sandbox server against a fresh `python -c` per program.

A fixed workload of step-like programs goes through the gRPC server with concurrency = cores, then the same
programs run as fresh interpreters (what most evaluation harnesses do). Printed per program: executions/s both
ways and their ratio, and latency percentiles unloaded (one call at a time) and loaded (concurrency = cores).
The figures go into docs/benchmarks.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

WORKLOAD = {
    "print": "print(1)",
    "arithmetic": "a = 17 * 23\nb = a ** 3 - 5\nprint(a, b, b % 7)",
    "fractions": "from fractions import Fraction\nx = Fraction(3, 4) + Fraction(5, 6)\nprint(x, float(x))",
    "sympy_solve": "from sympy import symbols, solve\nx = symbols('x')\nprint(solve(x**2 - 5*x + 6, x))",
    "sympy_simplify": "from sympy import symbols, simplify\nx = symbols('x')\nprint(simplify((x**2 - 1) / (x - 1)))",
    # A node deep in a search tree: the code of every earlier step, then the new one.
    "sympy_4_steps": (
        "from sympy import symbols, Eq, solve, Rational\n"
        "x, y = symbols('x y')\n"
        "eq1 = Eq(2*x + 3*y, 12)\neq2 = Eq(x - y, 1)\n"
        "sol = solve((eq1, eq2), (x, y))\n"
        "total = sol[x] + sol[y]\n"
        "print(total, Rational(total).limit_denominator(100))"
    ),
    "raises": "values = [3, 1, 0]\nprint(sum(1 / v for v in values))",
}
SYMPY = ("sympy_solve", "sympy_simplify", "sympy_4_steps")


@dataclass
class Figures:
    name: str
    sandbox_per_s: float
    fresh_per_s: float
    p50_ms: float
    p99_ms: float
    loaded_p50_ms: float
    loaded_p99_ms: float

    @property
    def ratio(self) -> float:
        return self.sandbox_per_s / self.fresh_per_s


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = sub.add_parser("sandbox", help="sandbox executions/s and latency vs a fresh interpreter per program")
    bench.add_argument("--target", help="a running sandbox server (default: start one on 127.0.0.1)")
    bench.add_argument("--requests", type=int, default=200, help="loaded requests per program (default 200)")
    bench.add_argument("--sequential", type=int, default=50, help="one-at-a-time requests per program (default 50)")
    bench.add_argument("--fresh", type=int, default=10, help="fresh interpreters per program (default 10)")
    bench.add_argument("--concurrency", type=int, default=None, help="in-flight requests (default: cores)")
    bench.add_argument(
        "--programs", default=",".join(WORKLOAD), help=f"comma-separated subset of: {', '.join(WORKLOAD)}"
    )
    bench.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    concurrency = args.concurrency or len(os.sched_getaffinity(0))
    if args.target:
        figures = asyncio.run(_measure(args.target, args, concurrency))
    else:
        with _local_server() as target:
            figures = asyncio.run(_measure(target, args, concurrency))
    _print(figures, concurrency)
    return 0


@contextlib.contextmanager
def _local_server() -> Iterator[str]:
    """`thinkmesh serve sandbox --port 0` for the duration of the benchmark; yields its address."""
    env = {**os.environ, "THINKMESH_SANDBOX_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "services.cli", "serve", "sandbox", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"thinkmesh: the sandbox server did not start: {line!r}")
        yield line.removeprefix("listening on ")
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _measure(target: str, args: argparse.Namespace, concurrency: int) -> list[Figures]:
    from services.common.channels import open_channel
    from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

    figures = []
    async with open_channel(target) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)

        async def once(code: str) -> float:
            started = time.perf_counter()
            reply = await stub.Execute(sandbox_pb2.ExecuteRequest(code=code), timeout=60, wait_for_ready=True)
            if reply.status not in (sandbox_pb2.EXECUTE_STATUS_OK, sandbox_pb2.EXECUTE_STATUS_ERROR):
                raise SystemExit(f"thinkmesh: unexpected {sandbox_pb2.ExecuteStatus.Name(reply.status)}")
            return (time.perf_counter() - started) * 1000

        for name in args.programs.split(","):
            code = WORKLOAD[name]
            for _ in range(5):
                await once(code)
            sequential = [await once(code) for _ in range(args.sequential)]
            loaded, sandbox_per_s = await _loaded(once, code, args.requests, concurrency)
            fresh_per_s = await _fresh(code, args.fresh, concurrency)
            figures.append(
                Figures(
                    name,
                    sandbox_per_s,
                    fresh_per_s,
                    _percentile(sequential, 50),
                    _percentile(sequential, 99),
                    _percentile(loaded, 50),
                    _percentile(loaded, 99),
                )
            )
            print(f"  measured {name}", file=sys.stderr)
    return figures


async def _loaded(once: Any, code: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            latencies.append(await once(code))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, requests / (time.perf_counter() - started)


async def _fresh(code: str, runs: int, concurrency: int) -> float:
    """Executions/s of `python -c CODE`, `concurrency` at a time."""
    remaining = iter(range(runs))

    async def worker() -> None:
        for _ in remaining:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            await process.wait()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return runs / (time.perf_counter() - started)


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _print(figures: list[Figures], concurrency: int) -> None:
    print(f"sandbox vs fresh `python -c`, concurrency {concurrency} ({len(os.sched_getaffinity(0))} cores)")
    header = (
        f"{'program':16} {'sandbox/s':>10} {'fresh/s':>8} {'ratio':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p50 loaded':>10} {'p99 loaded':>10}"
    )
    print(header)
    for f in figures:
        print(
            f"{f.name:16} {f.sandbox_per_s:10.1f} {f.fresh_per_s:8.2f} {f.ratio:6.1f}x {f.p50_ms:7.1f} "
            f"{f.p99_ms:7.1f} {f.loaded_p50_ms:10.1f} {f.loaded_p99_ms:10.1f}"
        )
    sympy = [f for f in figures if f.name in SYMPY]
    if sympy:
        sandbox = statistics.fmean(f.sandbox_per_s for f in sympy)
        fresh = statistics.fmean(f.fresh_per_s for f in sympy)
        print(f"sympy programs: {sandbox:.1f}/s vs {fresh:.2f}/s fresh = {sandbox / fresh:.1f}x (target >= 20x)")
    by_name = {f.name: f for f in figures}
    if "sympy_solve" in by_name:
        print(f"p50 sympy_solve {by_name['sympy_solve'].p50_ms:.1f} ms (target <= 25)")
    if "print" in by_name:
        print(f"p50 print {by_name['print'].p50_ms:.1f} ms (target <= 5)")
