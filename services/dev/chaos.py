"""`thinkmesh bench chaos`: faults injected into a live local stack, and what each of them cost.

The longer version of the fault tests (docs/operations.md, "What holds under faults"): it starts the stack
`thinkmesh up` runs (sandbox, policy, PPM, a Celery worker, search, under the supervisor), then tries in turn:

  malformed        raw bytes that are no protobuf, to the main RPC of every service: each must say INVALID_ARGUMENT
  huge-then-normal the largest GenerateSteps the policy allows, with a short deadline, then a normal call
  many-largest     that largest request from several clients at once, then a normal call
  worker-kill      Solves in flight when the worker is SIGKILLed: each must still be answered
  <service>-kill   calls to sandbox, policy, PPM and search while each is SIGKILLed and restarted: how long it is
                   away (calls refused meanwhile are the price of a restart; not coming back is a loss)

and prints what it tried, what came back as the contract says, and what it lost.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

# A message that no protobuf parser accepts: field 1, length-delimited, with a length past the end.
MALFORMED = b"\x0a\xff\xff\xff\x0f"
MAIN_RPCS = {
    "sandbox": "/thinkmesh.v1.SandboxService/Execute",
    "policy": "/thinkmesh.v1.PolicyService/GenerateSteps",
    "ppm": "/thinkmesh.v1.PPMService/ScoreSteps",
    "search": "/thinkmesh.v1.SearchService/Solve",
}
QUESTION = "A farmer has 17 sheep and buys 25 more. How many sheep does the farmer have?"
STEP = "sheep = 17 + 25\n<end_of_step>"


@dataclass(frozen=True)
class Outcome:
    scenario: str
    tried: int  # calls made
    ok: int  # calls that ended as the contract says
    lost: int  # calls that did not
    seconds: float
    note: str


def _code(error: BaseException) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.RpcError) else None


def malformed(addresses: dict[str, str]) -> Outcome:
    started = time.monotonic()
    wrong = []
    for name, method in MAIN_RPCS.items():
        with grpc.insecure_channel(addresses[name]) as channel:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                call(MALFORMED, timeout=10)
                wrong.append(f"{name}: OK")
            except grpc.RpcError as exc:
                if _code(exc) != grpc.StatusCode.INVALID_ARGUMENT:
                    wrong.append(f"{name}: {_code(exc)}")
    note = ", ".join(wrong) or "every service: INVALID_ARGUMENT"
    return Outcome("malformed", len(MAIN_RPCS), len(MAIN_RPCS) - len(wrong), len(wrong), _since(started), note)


def _policy_stub(address: str) -> tuple[Any, Any, grpc.Channel]:
    from thinkmesh.v1 import policy_pb2, policy_pb2_grpc

    channel = grpc.insecure_channel(address)
    return policy_pb2, policy_pb2_grpc.PolicyServiceStub(channel), channel


def _largest(pb: Any) -> Any:
    from services.policy.settings import PolicySettings

    limits = PolicySettings()
    prompt = pb.StepPrompt(question=QUESTION)
    return pb.GenerateStepsRequest(
        prompts=[prompt] * limits.max_prompts, n=limits.max_n, max_new_tokens=limits.max_new_tokens, temperature=1.0
    )


def _normal_call_seconds(pb: Any, stub: Any) -> float:
    started = time.monotonic()
    stub.GenerateSteps(
        pb.GenerateStepsRequest(prompts=[pb.StepPrompt(question=QUESTION)], n=1, max_new_tokens=8), timeout=60
    )
    return _since(started)


def huge_then_normal(address: str, clients: int, deadline_s: float) -> Outcome:
    """`clients` largest requests at once with `deadline_s` each; each must end DEADLINE_EXCEEDED by its deadline
    plus one decoding step's slack, and a normal call after them must be answered."""
    pb, stub, channel = _policy_stub(address)
    slack = max(5.0, deadline_s)
    started = time.monotonic()
    try:

        def one(_: int) -> tuple[grpc.StatusCode | None, float]:
            began = time.monotonic()
            try:
                stub.GenerateSteps(_largest(pb), timeout=deadline_s)
                return grpc.StatusCode.OK, _since(began)
            except grpc.RpcError as exc:
                return _code(exc), _since(began)

        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(clients)))
        ended = [s for code, s in results if code == grpc.StatusCode.DEADLINE_EXCEEDED and s <= deadline_s + slack]
        try:
            normal = _normal_call_seconds(pb, stub)
            normal_ok = 1
        except grpc.RpcError as exc:
            normal, normal_ok = float("nan"), 0
            results.append((_code(exc), 0.0))
    finally:
        channel.close()
    name = "huge-then-normal" if clients == 1 else "many-largest"
    slowest = max((s for _, s in results), default=0.0)
    note = (
        f"{clients} largest request(s), {deadline_s:g} s deadline: {len(ended)} ended DEADLINE_EXCEEDED in time "
        f"(slowest {slowest:.1f} s); the normal call after them took {normal:.1f} s"
    )
    ok = len(ended) + normal_ok
    return Outcome(name, clients + 1, ok, clients + 1 - ok, _since(started), note)


def worker_kill(stack: Any, address: str, solves: int, kill_after_s: float) -> Outcome:
    from thinkmesh.v1 import search_pb2, search_pb2_grpc

    started = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)

        def solve(_: int) -> grpc.StatusCode | None:
            try:
                stub.Solve(search_pb2.SolveRequest(problem=QUESTION, rollouts=8), timeout=300)
                return grpc.StatusCode.OK
            except grpc.RpcError as exc:
                return _code(exc)

        with ThreadPoolExecutor(solves) as pool:
            futures = [pool.submit(solve, i) for i in range(solves)]
            time.sleep(kill_after_s)
            pid = stack.kill("worker")
            codes = [f.result() for f in futures]
    ok = codes.count(grpc.StatusCode.OK)
    note = f"worker {pid} SIGKILLed {kill_after_s:g} s into {solves} Solves; answered: {ok}"
    if ok < solves:
        note += f"; others: {sorted({str(c) for c in codes if c != grpc.StatusCode.OK})}"
    return Outcome("worker-kill", solves, ok, solves - ok, _since(started), note)


def _normal_calls() -> dict[str, Callable[[grpc.Channel], object]]:
    """One ordinary call per service, by name."""
    from thinkmesh.v1 import (
        policy_pb2,
        policy_pb2_grpc,
        ppm_pb2,
        ppm_pb2_grpc,
        sandbox_pb2,
        sandbox_pb2_grpc,
        search_pb2,
        search_pb2_grpc,
    )

    return {
        "sandbox": lambda ch: sandbox_pb2_grpc.SandboxServiceStub(ch).Execute(
            sandbox_pb2.ExecuteRequest(code="print(6 * 7)", timeout_ms=5000), timeout=30
        ),
        "policy": lambda ch: policy_pb2_grpc.PolicyServiceStub(ch).GenerateSteps(
            policy_pb2.GenerateStepsRequest(prompts=[policy_pb2.StepPrompt(question=QUESTION)], n=1, max_new_tokens=8),
            timeout=30,
        ),
        "ppm": lambda ch: ppm_pb2_grpc.PPMServiceStub(ch).ScoreSteps(
            ppm_pb2.ScoreStepsRequest(
                items=[ppm_pb2.ScoreItem(question=QUESTION, steps=["x = 17 + 25\n<end_of_step>"])]
            ),
            timeout=30,
        ),
        "search": lambda ch: search_pb2_grpc.SearchServiceStub(ch).Solve(
            search_pb2.SolveRequest(problem=QUESTION, rollouts=1), timeout=60
        ),
    }


def service_kill(
    stack: Any, name: str, address: str, call: Callable[[grpc.Channel], object], seconds: float
) -> Outcome:
    """Ordinary calls to one service in a loop; the service is SIGKILLed a second in. Calls refused while it is away
    are the price of a restart, not losses; a loss is no recovery within `seconds` (the supervisor restarts it on
    the same address)."""
    started = time.monotonic()
    refused, answered = 0, 0
    killed_at: float | None = None
    back_after: float | None = None
    with grpc.insecure_channel(address) as channel:
        while _since(started) < seconds and back_after is None:
            if killed_at is None and _since(started) > 1.0:
                stack.kill(name)
                killed_at = time.monotonic()
            try:
                call(channel)
                answered += 1
                if killed_at is not None:
                    back_after = _since(killed_at)
            except grpc.RpcError:
                refused += 1
                time.sleep(0.2)
    if back_after is None:
        note = f"{name} SIGKILLed; not back within {seconds:g} s"
    else:
        note = f"{name} SIGKILLed; {refused} calls refused while it restarted; back after {back_after:.1f} s"
    return Outcome(f"{name}-kill", answered + refused, answered, int(back_after is None), _since(started), note)


def run(stack: Any, search: str, options: argparse.Namespace, report: Callable[[Outcome], None]) -> list[Outcome]:
    addresses = {name: stack.address(name) for name in ("sandbox", "policy", "ppm")} | {"search": search}
    steps: list[Callable[[], Outcome]] = [
        lambda: malformed(addresses),
        lambda: huge_then_normal(addresses["policy"], 1, options.deadline),
        lambda: huge_then_normal(addresses["policy"], options.clients, options.deadline),
        lambda: worker_kill(stack, search, options.solves, options.kill_after),
    ]
    for name, call in _normal_calls().items():
        steps.append(functools.partial(service_kill, stack, name, addresses[name], call, options.recovery))
    outcomes = []
    for step in steps:
        outcome = step()
        report(outcome)
        outcomes.append(outcome)
    return outcomes


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def _chaos(args: argparse.Namespace) -> int:
    from services.common.store import ModelStore
    from services.dev.stack import LocalStack
    from services.trainer.bootstrap import bootstrap, config_for

    with tempfile.TemporaryDirectory(prefix="thinkmesh-chaos-") as scratch:
        state = Path(args.state_dir).resolve() if args.state_dir else Path(scratch)
        store = ModelStore(state / "store")
        if not (store.current_name("policy") and store.current_name("ppm")):
            print(f"bootstrapping the {args.preset} models into {store.root}", flush=True)
            bootstrap(store, config_for(args.preset, seed=0), progress=False)
        lock = threading.Lock()
        print(f"{'scenario':<17}{'tried':>6}{'ok':>5}{'lost':>6}{'seconds':>9}  what happened", flush=True)

        def report(o: Outcome) -> None:
            with lock:
                print(f"{o.scenario:<17}{o.tried:>6}{o.ok:>5}{o.lost:>6}{o.seconds:>9.1f}  {o.note}", flush=True)

        with LocalStack(state, announce=lambda line: print(f"  stack: {line}", flush=True)) as stack:
            outcomes = run(stack, stack.start(), args, report)
            failure = stack.failure
    lost = sum(o.lost for o in outcomes)
    print(f"lost: {lost}" + (f"; the stack gave up: {failure}" if failure else ""))
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes]))
    return 0 if lost == 0 and not failure else 1


def register(areas: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    chaos = areas.add_parser("chaos", help="faults injected into a live local stack: what each cost (lost calls)")
    chaos.add_argument("--state-dir", default=None, help="the stack's store, broker and logs (default: a temp dir)")
    chaos.add_argument("--preset", choices=("small", "micro"), default="micro", help="models to bootstrap if none")
    chaos.add_argument("--deadline", type=float, default=1.5, help="seconds: the largest requests' deadline")
    chaos.add_argument("--clients", type=int, default=8, help="clients sending the largest request at once")
    chaos.add_argument("--solves", type=int, default=4, help="Solves in flight when the worker is killed")
    chaos.add_argument("--kill-after", type=float, default=1.5, help="seconds into them the worker is killed")
    chaos.add_argument("--recovery", type=float, default=60.0, help="seconds the policy has to come back")
    chaos.add_argument("--json", action="store_true")
    chaos.set_defaults(func=_chaos)
