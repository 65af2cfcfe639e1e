"""StartRound saves the round before it answers, so GetRound finds it at once; requests are checked where they are
translated (numbers in range, a known model kind). The TrainerService runs on 127.0.0.1 in process, its rounds
held until the test releases them. Resuming: test_round_start_resume.py, test_round_start_sigterm.py."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc import aio

from services.common.server import GrpcServer, ServerSettings, Service, service_name
from services.common.store import Lineage, ModelStore
from services.trainer.config import RoundConfig, preset
from services.trainer.core import TrainerCore
from services.trainer.rounds import RoundRunner
from services.trainer.servicer import TrainerServicer
from thinkmesh.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc

pytestmark = pytest.mark.integration

Served = tuple[trainer_pb2_grpc.TrainerServiceStub, Path]  # a stub of the in-process server, its store's root


@dataclass
class HeldRounds:
    """A runner factory whose rounds record the config they were given and run until released."""

    configs: list[RoundConfig] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __call__(self, config: RoundConfig) -> RoundRunner:
        held = self

        class Held:
            def run(self) -> None:
                held.configs.append(config)
                held.release.wait(30)

        return Held()  # type: ignore[return-value]

    def started(self, count: int = 1) -> list[RoundConfig]:
        for _ in range(300):
            if len(self.configs) >= count:
                return self.configs
            threading.Event().wait(0.01)
        raise AssertionError(f"{count} round(s) expected to start, {len(self.configs)} did")


@pytest.fixture
def held() -> Iterator[HeldRounds]:
    rounds = HeldRounds()
    yield rounds
    rounds.release.set()


def _core(store: ModelStore, held: HeldRounds) -> TrainerCore:
    return TrainerCore(store, preset("tiny"), held)


@pytest_asyncio.fixture
async def served(tmp_path: Path, held: HeldRounds) -> AsyncIterator[Served]:
    store = ModelStore(tmp_path / "store")
    servicer = TrainerServicer(_core(store, held))
    server = GrpcServer(
        ServerSettings(),
        [
            Service(
                service_name(trainer_pb2, "TrainerService"),
                lambda s: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicer, s),
            )
        ],
    )
    address = await server.start()
    try:
        async with aio.insecure_channel(address) as channel:
            yield trainer_pb2_grpc.TrainerServiceStub(channel), store.root
    finally:
        await server.stop(0)


async def test_get_round_right_after_start_round_finds_it(
    served: Served,
) -> None:
    stub, root = served
    started = await stub.StartRound(trainer_pb2.StartRoundRequest(pool_size=3, rollouts=4), timeout=10)
    assert started.round == 1
    for request in (trainer_pb2.GetRoundRequest(round=1), trainer_pb2.GetRoundRequest()):
        reply = await stub.GetRound(request, timeout=10)
        assert (reply.round, reply.state) == (1, trainer_pb2.ROUND_STATE_RUNNING)
        assert reply.stage == "queued"  # the held round never ran a stage
    saved = json.loads((root / "rounds" / "0001" / "state.json").read_text())
    assert saved["state"] == "queued"
    assert saved["request"] == {"pool_size": 3, "rollouts": 4, "candidates": 0, "pool_file": "", "eval_dataset": ""}
    with pytest.raises(aio.AioRpcError) as busy:
        await stub.StartRound(trainer_pb2.StartRoundRequest(), timeout=10)
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_start_round_refuses_numbers_out_of_range_and_saves_nothing(
    served: Served,
) -> None:
    stub, root = served
    for request in (
        trainer_pb2.StartRoundRequest(rollouts=10_001),
        trainer_pb2.StartRoundRequest(pool_size=2**32 - 1),
        trainer_pb2.StartRoundRequest(candidates=10_001),
    ):
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.StartRound(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "out of range" in (refused.value.details() or "")
    assert not (root / "rounds").exists()


async def test_list_models_refuses_an_unknown_kind(served: Served) -> None:
    stub, root = served
    store = ModelStore(root)
    for kind in ("policy", "ppm"):
        store.publish(kind, lambda d: (d / "config.json").write_text("{}"), Lineage(source="test"))
    everything = await stub.ListModels(trainer_pb2.ListModelsRequest(), timeout=10)
    assert sorted(m.kind for m in everything.models) == [common_pb2.MODEL_KIND_POLICY, common_pb2.MODEL_KIND_PPM]
    policies = await stub.ListModels(trainer_pb2.ListModelsRequest(kind=common_pb2.MODEL_KIND_POLICY), timeout=10)
    assert [m.kind for m in policies.models] == [common_pb2.MODEL_KIND_POLICY]
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.ListModels(trainer_pb2.ListModelsRequest(kind=99), timeout=10)  # type: ignore[arg-type]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "kind=99 is not a model kind" in (refused.value.details() or "")
