"""The policy's part of `thinkmesh bench policy`: generated tokens/s through a real PolicyService on 127.0.0.1,
from concurrent callers (merged into batches) and then one at a time, over the same calls. The command itself,
with its untrained models for an empty store, is services/cli/bench.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.common.store import ModelStore
from services.common.timing import timed

QUESTIONS = [
    "Mia has 14 marbles. She gives 5 to Leo and buys 9 more. How many marbles does she have now?",
    "A shop sells pens at 3 dollars each. Sam buys 7 pens and pays with 50 dollars. How much change does he get?",
    "Ravi reads 12 pages a day for 6 days, then 20 pages on the seventh day. How many pages did he read?",
    "There are 48 apples shared equally among 6 baskets. How many apples are in 4 baskets?",
]


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
                seconds, replies = await timed([call(i) for i in range(callers)], concurrent)
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
