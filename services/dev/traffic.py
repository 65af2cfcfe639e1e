"""`thinkmesh bench traffic`: interactive Solve traffic beside a training round, on a live local stack with Redis.

It starts a redis-server on 127.0.0.1 and the stack `thinkmesh up` runs, with the search tier split as the chart
splits it: one worker pool on the `solve` queue, one on the `round` queue (services/dev/stack.py). Then, in turn:

  alone         --solves Solve calls from --clients concurrent clients, nothing else running
  during round  the same calls while a round of --problems problems runs (the trainer's own CeleryDispatcher, at most
                --in-flight tasks out at once)
  worker killed a second round with the same calls beside it; the round's worker is SIGKILLed --kill-after seconds
                in (the stack restarts it; Redis hands its unacknowledged tasks out again after the visibility
                timeout, set short here)

and reports Solve p50/p99 of the first two phases, a CPU profile of each phase (seconds of CPU each service's
processes used, and the phase's wall time: on a small machine it shows which service the round takes the cores
from), Solve calls lost (no answer), round problems lost (no result
when the round ends), problems searched twice (two workers' `searched job=… problem=…` lines for one problem), and
whether both rounds completed. The last line with --json holds at least `solve_p99_alone_ms`,
`solve_p99_during_round_ms`, `lost`, `duplicated` and `round_completed`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

QUESTION = "Mia has {a} marbles and buys {b} more. How many marbles does she have?"
POOLS = {"worker-solve": "solve", "worker-round": "round"}
_SEARCHED = re.compile(r"searched job=(\S+) problem=(\S+)")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def solve_calls(address: str, count: int, clients: int, rollouts: int, offset: int) -> tuple[list[float], int]:
    """`count` Solve calls from `clients` threads; (latencies in ms of the answered ones, calls not answered)."""
    import grpc

    from thinkmesh.v1 import search_pb2, search_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)

        def one(i: int) -> float | None:
            request = search_pb2.SolveRequest(
                problem=QUESTION.format(a=10 + (offset + i) % 40, b=2 + i % 7), rollouts=rollouts
            )
            started = time.perf_counter()
            try:
                stub.Solve(request, timeout=300)
            except grpc.RpcError:
                return None
            return (time.perf_counter() - started) * 1000

        with ThreadPoolExecutor(clients) as pool:
            outcomes = list(pool.map(one, range(count)))
    answered = [ms for ms in outcomes if ms is not None]
    return answered, len(outcomes) - len(answered)


def round_problems(count: int, rollouts: int, seed: int) -> list[Any]:
    from services.math.curriculum import generate
    from services.search.protocol import SolveTask

    problems = generate(2, count, seed=seed)
    return [
        SolveTask(p.question, p.answer, rollouts=rollouts, problem_id=f"p{seed}-{i:04d}")
        for i, p in enumerate(problems)
    ]


def searched_twice(logs: Path) -> int:
    """Problems of a round that two runs searched to the end (from the workers' logs)."""
    runs: Counter[tuple[str, str]] = Counter()
    for log in logs.glob("worker-*.log"):
        runs.update(_SEARCHED.findall(log.read_text(errors="replace")))
    return sum(1 for n in runs.values() if n > 1)


def run_round(app: Any, store_root: Path, job: str, problems: list[Any], in_flight: int) -> dict[str, Any]:
    from services.trainer.dispatch import CeleryDispatcher, SearchJob

    started = time.monotonic()
    dispatcher = CeleryDispatcher(app, store_root, max_in_flight=in_flight, poll_s=0.2, timeout_s=1200)
    outcome = dispatcher.run(SearchJob(job, problems))
    return {
        "problems": len(problems),
        "results": len(outcome.results),
        "failed": len(outcome.failed),
        "seconds": round(time.monotonic() - started, 1),
    }


def _in_thread(work: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Start `work` in a thread; the returned function waits for its result (or re-raises its error)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def wait() -> dict[str, Any]:
        thread.join()
        if "error" in box:
            raise box["error"]
        return dict(box["result"])

    return wait


class _PhaseProfile:
    """CPU seconds each part of the stack used during one phase, from a reading before it and one after."""

    def __init__(self, stack: Any) -> None:
        self._stack = stack
        self._started = time.monotonic()
        self._before = self._reading()

    def _reading(self) -> dict[str, float]:
        # The bench's own process (its Solve clients, the round's dispatcher) and the redis-server it started: what
        # of its tree is not a stack child's.
        used: dict[str, float] = self._stack.cpu_seconds({os.getpid(): "bench+redis"})
        return used

    def end(self) -> dict[str, Any]:
        after = self._reading()
        wall = time.monotonic() - self._started
        # A child restarted during the phase starts again from zero: what it used before is lost to the reading.
        cpu = {name: round(max(0.0, after[name] - self._before.get(name, 0.0)), 1) for name in after}
        return {"wall_s": round(wall, 1), "cpu_s": cpu, "cores_busy": round(sum(cpu.values()) / wall, 2)}


def bench(args: argparse.Namespace, state: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from services.common.store import ModelStore
    from services.dev.redis_server import redis_server
    from services.dev.stack import LocalStack
    from services.search.celery_app import make_celery
    from services.search.settings import CelerySettings
    from services.trainer.bootstrap import bootstrap, config_for

    store = ModelStore(state / "store")
    if not (store.current_name("policy") and store.current_name("ppm")):
        say(f"bootstrapping the {args.preset} models into {store.root}")
        bootstrap(store, config_for(args.preset, seed=0), progress=False)
    with redis_server(state) as redis_url:
        env = {
            "THINKMESH_SEARCH_BROKER_URL": redis_url,
            "THINKMESH_SEARCH_RESULT_BACKEND": redis_url,
            # A killed worker's tasks come back after this; each search stops before it (90 %).
            "THINKMESH_SEARCH_VISIBILITY_TIMEOUT_S": str(args.visibility_timeout),
            "THINKMESH_SEARCH_WORKER_CONCURRENCY": str(args.concurrency),
        }
        app = make_celery(CelerySettings(broker_url=redis_url, result_backend=redis_url))
        with LocalStack(state, env=env, announce=lambda line: say(f"  stack: {line}")) as stack:
            address = stack.start(worker_pools=POOLS)
            solve_calls(address, args.clients, args.clients, args.rollouts, offset=1000)  # warm-up: first calls load
            say("phase 1: Solve alone")
            profile = _PhaseProfile(stack)
            alone, lost_alone = solve_calls(address, args.solves, args.clients, args.rollouts, offset=0)
            profile_alone = profile.end()

            say(f"phase 2: Solve during a round of {args.problems} problems")
            first = _in_thread(
                lambda: run_round(
                    app, store.root, "bench/round1", round_problems(args.problems, args.rollouts, 1), args.in_flight
                )
            )
            time.sleep(args.round_head_start)
            profile = _PhaseProfile(stack)
            during, lost_during = solve_calls(address, args.solves, args.clients, args.rollouts, offset=100)
            profile_during = profile.end()
            round1 = first()

            say(f"phase 3: a round of {args.problems} problems, its worker SIGKILLed {args.kill_after:g} s in")
            second = _in_thread(
                lambda: run_round(
                    app, store.root, "bench/round2", round_problems(args.problems, args.rollouts, 2), args.in_flight
                )
            )
            killer = threading.Timer(
                args.kill_after, lambda: say(f"  killed worker-round {stack.kill('worker-round')}")
            )
            killer.start()
            killed, lost_killed = solve_calls(address, args.solves, args.clients, args.rollouts, offset=200)
            round2 = second()
            killer.join()
            duplicated = searched_twice(state / "logs")
            failure = stack.failure
    lost_round = sum(r["problems"] - r["results"] for r in (round1, round2))
    report: dict[str, Any] = {
        "solve_p50_alone_ms": round(statistics.median(alone), 1) if alone else None,
        "solve_p99_alone_ms": round(_percentile(alone, 0.99), 1),
        "solve_p50_during_round_ms": round(statistics.median(during), 1) if during else None,
        "solve_p99_during_round_ms": round(_percentile(during, 0.99), 1),
        "solve_p99_worker_killed_ms": round(_percentile(killed, 0.99), 1),
        "lost": lost_alone + lost_during + lost_killed + lost_round,
        "lost_solves": lost_alone + lost_during + lost_killed,
        "lost_round_problems": lost_round,
        "duplicated": duplicated,
        "round_completed": lost_round == 0 and not failure,
        "rounds": [round1, round2],
        "solves_per_phase": args.solves,
        "clients": args.clients,
        "rollouts": args.rollouts,
        "stack_failure": failure,
        "profile": {"alone": profile_alone, "during_round": profile_during},
    }
    alone_p99 = report["solve_p99_alone_ms"]
    report["p99_ratio"] = round(report["solve_p99_during_round_ms"] / alone_p99, 2) if alone_p99 else None
    return report


def _traffic(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="thinkmesh-traffic-") as scratch:
        state = Path(args.state_dir).resolve() if args.state_dir else Path(scratch)
        report = bench(args, state, say)
    for key in ("solve_p50_alone_ms", "solve_p99_alone_ms", "solve_p50_during_round_ms", "solve_p99_during_round_ms"):
        say(f"{key:28} {report[key]}")
    for key in ("p99_ratio", "lost", "duplicated", "round_completed"):
        say(f"{key:28} {report[key]}")
    for phase, profile in report["profile"].items():
        used = ", ".join(f"{name} {seconds:g}" for name, seconds in sorted(profile["cpu_s"].items()))
        say(f"cpu seconds, {phase:12} {used} (wall {profile['wall_s']:g} s, {profile['cores_busy']:g} cores busy)")
    if args.json:
        print(json.dumps(report))
    return 0 if report["lost"] == 0 and report["duplicated"] == 0 and report["round_completed"] else 1


def register(areas: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    traffic = areas.add_parser("traffic", help="Solve latency alone and beside a round; lost and duplicated tasks")
    traffic.add_argument("--state-dir", default=None, help="the stack's store, broker and logs (default: a temp dir)")
    traffic.add_argument("--preset", choices=("small", "micro"), default="micro", help="models to bootstrap if none")
    traffic.add_argument("--solves", type=int, default=24, help="Solve calls per phase")
    traffic.add_argument("--clients", type=int, default=4, help="concurrent Solve clients")
    traffic.add_argument("--rollouts", type=int, default=4, help="rollouts of each Solve and each round problem")
    traffic.add_argument("--problems", type=int, default=32, help="problems in each round")
    traffic.add_argument("--in-flight", type=int, default=8, help="round tasks out at once (the trainer's bound)")
    traffic.add_argument("--concurrency", type=int, default=8, help="tasks one worker runs at once")
    traffic.add_argument("--round-head-start", type=float, default=2.0, help="seconds the round runs before Solves")
    traffic.add_argument("--kill-after", type=float, default=5.0, help="seconds into the second round")
    traffic.add_argument("--visibility-timeout", type=int, default=40, help="seconds: the broker's redelivery")
    traffic.add_argument("--json", action="store_true")
    traffic.set_defaults(func=_traffic)
