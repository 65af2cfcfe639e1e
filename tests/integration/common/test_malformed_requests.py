"""Undecodable requests are the caller's fault: INVALID_ARGUMENT on every service, never UNKNOWN.

Each service runs as a real server process on 127.0.0.1 (the same commands the other integration tests use). A
generic channel sends raw bytes, so the client's own serializer cannot refuse them first: a corrupt wire format,
and a string field holding bytes that are not UTF-8 (protobuf's parser refuses those at parse time).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import Message

from support.processes import REPO, THINKMESH, server_process
from thinkmesh.v1 import policy_pb2, ppm_pb2, sandbox_pb2, search_pb2, trainer_pb2

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARKER = "zz"  # a string value in each valid request, replaced by as many bytes that are not UTF-8
NOT_UTF8 = b"\xc3\x28"  # a two-byte lead followed by no continuation byte


@dataclass(frozen=True)
class Rpc:
    server: str
    method: str
    request: Message
    streaming: bool = False

    def __str__(self) -> str:
        return self.method.rsplit("/", 2)[-2].removeprefix("thinkmesh.v1.") + "." + self.method.rsplit("/", 1)[-1]


RPCS = [
    Rpc("sandbox", "/thinkmesh.v1.SandboxService/Execute", sandbox_pb2.ExecuteRequest(code=MARKER)),
    Rpc(
        "sandbox",
        "/thinkmesh.v1.SandboxService/ExecuteBatch",
        sandbox_pb2.ExecuteBatchRequest(requests=[sandbox_pb2.ExecuteRequest(code=MARKER)]),
    ),
    Rpc(
        "policy",
        "/thinkmesh.v1.PolicyService/GenerateSteps",
        policy_pb2.GenerateStepsRequest(prompts=[policy_pb2.StepPrompt(question=MARKER)]),
    ),
    Rpc(
        "ppm",
        "/thinkmesh.v1.PPMService/ScoreSteps",
        ppm_pb2.ScoreStepsRequest(items=[ppm_pb2.ScoreItem(question=MARKER, steps=["x = 1"])]),
    ),
    Rpc("search", "/thinkmesh.v1.SearchService/Solve", search_pb2.SolveRequest(problem=MARKER)),
    Rpc("search", "/thinkmesh.v1.SearchService/SolveStream", search_pb2.SolveRequest(problem=MARKER), streaming=True),
    Rpc("trainer", "/thinkmesh.v1.TrainerService/StartRound", trainer_pb2.StartRoundRequest(pool_file=MARKER)),
    Rpc("trainer", "/thinkmesh.v1.TrainerService/ListModels", trainer_pb2.ListModelsRequest(kind=1)),
]


def _commands() -> dict[str, list[str]]:
    return {
        "sandbox": [THINKMESH, "serve", "sandbox", "--port", "0"],
        "policy": [sys.executable, "-m", "support.scripted_policy"],
        "ppm": [THINKMESH, "serve", "ppm", "--port", "0"],  # an empty store: it waits for a model, and listens
        "search": [THINKMESH, "serve", "search", "--port", "0"],
        "trainer": [THINKMESH, "serve", "trainer", "--port", "0"],
    }


@pytest.fixture(scope="module")
def addresses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("malformed")
    broker = {
        "BROKER_URL": f"sqla+sqlite:///{root}/broker.sqlite",
        "RESULT_BACKEND": f"db+sqlite:///{root}/results.sqlite",
    }
    env = {
        "THINKMESH_STORE": str(root / "store"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        "THINKMESH_PPM_DEVICE": "cpu",
        "THINKMESH_POLICY_PORT": "0",
        **{f"THINKMESH_{service}_{name}": value for service in ("SEARCH", "TRAINER") for name, value in broker.items()},
    }
    with ExitStack() as servers:
        yield {name: servers.enter_context(server_process(argv, env))[1] for name, argv in _commands().items()}


def _call(address: str, rpc: Rpc, raw: bytes) -> grpc.RpcError:
    """Sends `raw` as the request (no serializer: the bytes go as they are) and returns the error it met."""
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            if rpc.streaming:
                list(channel.unary_stream(rpc.method)(raw, timeout=30, wait_for_ready=True))
            else:
                channel.unary_unary(rpc.method)(raw, timeout=30, wait_for_ready=True)
        except grpc.RpcError as exc:
            return exc
    pytest.fail(f"{rpc} accepted {raw!r}")


def _not_utf8(request: Message) -> bytes:
    raw = request.SerializeToString()
    assert raw.count(MARKER.encode()) == 1
    return raw.replace(MARKER.encode(), NOT_UTF8)  # as long as the marker: every length prefix still holds


@pytest.mark.parametrize("rpc", RPCS, ids=str)
@pytest.mark.parametrize("case", ["corrupt wire format", "string not UTF-8"])
def test_an_undecodable_request_is_invalid_argument(addresses: dict[str, str], rpc: Rpc, case: str) -> None:
    if case == "string not UTF-8" and MARKER.encode() not in rpc.request.SerializeToString():
        pytest.skip("the request has no string field")
    raw = b"\x0a\x05ab" if case == "corrupt wire format" else _not_utf8(rpc.request)  # field 1: 5 bytes, 2 sent
    error = _call(addresses[rpc.server], rpc, raw)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    name = rpc.request.DESCRIPTOR.full_name
    assert error.details().startswith(f"request is not a valid {name}: "), error.details()


def test_the_same_bytes_well_formed_are_decoded(addresses: dict[str, str]) -> None:
    """The decoding moved, it did not go: a valid request still reaches the servicer (here: its own refusal)."""
    rpc = RPCS[0]
    error = _call(addresses["sandbox"], rpc, sandbox_pb2.ExecuteRequest(code="x", timeout_ms=10**9).SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "timeout_ms=1000000000" in error.details()
