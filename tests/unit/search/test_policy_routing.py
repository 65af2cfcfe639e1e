"""Routing a search worker's policy calls (THINKMESH_SEARCH_POLICY_ROUTING), over real PolicyService servers on
127.0.0.1: a channel opened with an affinity header sends every call of one key to one server (consistent hashing
over every address the target lists) and moves a key whose server goes to another without a failed call, while a
round-robin channel spreads one key over all; the worker's GrpcGenerator splits a mixed batch by tree and routes
each part by its key; the worker wires its own policy and a task's as the setting says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.common.channels import AFFINITY_HEADER, open_channel
from services.common.errors import ConfigError
from services.common.server import GrpcServer, ServerSettings, Service, service_name
from services.common.settings import load_settings
from services.policy.core import Limits, PolicyCore
from services.policy.engine import GeneratedStep, SamplingParams, StepEnd, StepPrompt
from services.policy.servicer import PolicyServicer
from services.search.engine.backends import Prompt
from services.search.settings import SearchSettings, ServiceTargets
from services.search.worker.clients import GrpcGenerator, affinity_key
from thinkmesh.v1 import policy_pb2, policy_pb2_grpc

LIMITS = Limits(default_n=1, max_n=4, max_prompts=64, default_max_new_tokens=4, max_new_tokens=4)
REPLICAS = 3


@dataclass
class EchoEngine:
    """Known by its name (the version it reports); each candidate echoes its prompt; each call's questions kept."""

    name: str
    calls: list[list[str]] = field(default_factory=list)

    @property
    def version(self) -> str:
        return self.name

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        self.calls.append([p.question for p in prompts])
        return [[GeneratedStep(f"{p.question}/{len(p.steps)}", StepEnd.STEP, 1, -1.0)] * params.n for p in prompts]

    async def close(self) -> None:
        pass


@dataclass
class Replica:
    engine: EchoEngine
    server: GrpcServer
    address: str


@contextlib.asynccontextmanager
async def replicas(count: int = REPLICAS) -> AsyncIterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for i in range(count):
            engine = EchoEngine(f"replica-{i}")
            core = PolicyCore(LIMITS)
            await core.slot.install(engine)
            servicer = PolicyServicer(core)

            def register(server: Any, servicer: PolicyServicer = servicer) -> None:
                policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)

            server = GrpcServer(ServerSettings(), [Service(service_name(policy_pb2, "PolicyService"), register)])
            started.append(Replica(engine, server, await server.start()))
        yield started
    finally:
        for replica in started:
            await replica.server.stop(0)


def target(group: list[Replica]) -> str:
    """One target that resolves to every replica, as a headless Service's dns:/// name does."""
    return "ipv4:" + ",".join(r.address for r in group)


async def answered_by(stub: policy_pb2_grpc.PolicyServiceStub, key: str) -> str:
    """The name of the replica that answered one call under `key`."""
    request = policy_pb2.GenerateStepsRequest(prompts=[policy_pb2.StepPrompt(question="q")], n=1)
    reply = await stub.GenerateSteps(request, timeout=10, metadata=((AFFINITY_HEADER, key),))
    return reply.model_version


async def test_one_key_stays_on_one_server_and_keys_spread() -> None:
    async with replicas() as group, open_channel(target(group), affinity_header=AFFINITY_HEADER) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        homes: dict[str, str] = {}
        for key in (f"tree-{i}" for i in range(24)):
            seen = {await answered_by(stub, key) for _ in range(5)}
            assert len(seen) == 1, f"{key} went to {seen}"
            homes[key] = seen.pop()
        assert len(set(homes.values())) > 1, "every key hashed to one replica"


async def test_a_key_whose_server_goes_moves_without_a_failed_call() -> None:
    async with replicas() as group, open_channel(target(group), affinity_header=AFFINITY_HEADER) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        keys = [f"tree-{i}" for i in range(24)]
        before = {key: await answered_by(stub, key) for key in keys}
        gone = before[keys[0]]
        await next(r for r in group if r.engine.name == gone).server.stop(0)

        after = {key: await answered_by(stub, key) for key in keys}  # any failure raises here
        assert gone not in after.values()
        moved = [key for key in keys if before[key] == gone]
        # Only the keys of the server that went move (consistent hashing), and each to one new home.
        assert all(after[key] == before[key] for key in keys if key not in moved)
        for key in moved:
            assert {await answered_by(stub, key) for _ in range(3)} == {after[key]}


async def test_round_robin_spreads_one_key_over_every_server() -> None:
    async with replicas() as group, open_channel(target(group)) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        seen: set[str] = set()
        for _ in range(60):
            seen.add(await answered_by(stub, "tree-0"))
            if len(seen) == REPLICAS:
                break
        assert seen == {r.engine.name for r in group}


QUESTIONS = [f"question {i}: what is {i} + {i}?" for i in range(6)]


@pytest.mark.parametrize("n", [1, 2])
async def test_generator_splits_a_mixed_batch_by_tree_and_keeps_its_order(n: int) -> None:
    # Prompts of six trees, interleaved as a tick of the search loop gathers them, at several depths each.
    prompts = [Prompt(QUESTIONS[i % 6], ("step",) * (i // 6)) for i in range(18)]
    async with replicas() as group, open_channel(target(group), affinity_header=AFFINITY_HEADER) as channel:
        generator = GrpcGenerator(channel, deadline_s=10, affinity=True)
        rows, version = await generator.generate(prompts, n, 1.0, 4, 0)

        assert [[s.text for s in row] for row in rows] == [[f"{p.question}/{len(p.steps)}"] * n for p in prompts]
        calls = [(r.engine.name, questions) for r in group for questions in r.engine.calls]
        # One call per tree, holding only that tree's prompts (three each).
        assert sorted(q for _, questions in calls for q in set(questions)) == sorted(QUESTIONS)
        assert all(len(set(questions)) == 1 and len(questions) == 3 for _, questions in calls)
        home = {questions[0]: name for name, questions in calls}
        # Each tree's call went where its key is routed, and the version is that of the first prompt's call.
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        for question in QUESTIONS:
            assert home[question] == await answered_by(stub, affinity_key(question))
        assert version == home[prompts[0].question]

        # The next tick: the same trees, deeper, reach the same replicas.
        for replica in group:
            replica.engine.calls.clear()
        await generator.generate([Prompt(p.question, (*p.steps, "more")) for p in prompts], n, 1.0, 4, 0)
        assert {questions[0]: r.engine.name for r in group for questions in r.engine.calls} == home


async def test_generator_without_affinity_sends_the_batch_as_one_call() -> None:
    prompts = [Prompt(QUESTIONS[i % 3], ()) for i in range(6)]
    async with replicas() as group, open_channel(target(group)) as channel:
        rows, _ = await GrpcGenerator(channel, deadline_s=10).generate(prompts, 1, 1.0, 4, 0)
        assert [row[0].text for row in rows] == [f"{p.question}/0" for p in prompts]
        assert [questions for r in group for questions in r.engine.calls] == [[p.question for p in prompts]]


async def test_an_empty_batch_makes_no_call() -> None:
    async with replicas(1) as group, open_channel(target(group), affinity_header=AFFINITY_HEADER) as channel:
        assert await GrpcGenerator(channel, affinity=True).generate([], 1, 1.0, 4, 0) == ([], "")
        assert group[0].engine.calls == []


def test_the_routing_setting_defaults_to_round_robin_and_refuses_an_unknown_one() -> None:
    assert load_settings(SearchSettings, {}).policy_routing == "round_robin"
    routed = load_settings(SearchSettings, {"THINKMESH_SEARCH_POLICY_ROUTING": "affinity"})
    assert routed.policy_routing == "affinity"
    with pytest.raises(ConfigError, match="THINKMESH_SEARCH_POLICY_ROUTING: must be one of affinity, round_robin"):
        load_settings(SearchSettings, {"THINKMESH_SEARCH_POLICY_ROUTING": "random"})


@pytest.mark.parametrize("routing", ["affinity", "round_robin"])
async def test_the_worker_routes_its_own_and_a_tasks_policy_as_set(routing: str) -> None:
    from services.search.worker.runtime import WorkerRuntime

    prompts = [Prompt(QUESTIONS[i % 3], ()) for i in range(6)]
    async with replicas() as group, replicas(1) as teacher:
        settings = SearchSettings(targets=ServiceTargets(policy_target=target(group)), policy_routing=routing)
        runtime = WorkerRuntime(settings)  # its loop runs on a thread of its own
        try:
            for policy_target, serving in ((settings.targets.policy_target, group), (target(teacher), teacher)):

                async def solve_step(policy_target: str = policy_target) -> tuple[list[Any], str]:
                    # On the runtime's loop, as a task's search runs: the worker's generator, or the task's own.
                    generator = runtime._policy(policy_target) or runtime.search_loop.orchestrator.backends.generator
                    return await generator.generate(prompts, 1, 1.0, 4, 0)

                future = asyncio.run_coroutine_threadsafe(solve_step(), runtime.loop)
                rows, _ = await asyncio.wrap_future(future)
                assert [row[0].text for row in rows] == [f"{p.question}/0" for p in prompts]
                calls = [questions for r in serving for questions in r.engine.calls]
                # Affinity: one call per tree; round-robin: the batch as one call.
                assert len(calls) == (3 if routing == "affinity" else 1)
        finally:
            runtime.close()
