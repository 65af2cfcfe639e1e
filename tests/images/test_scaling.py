"""A new sandbox replica takes its share of the calls within seconds (#26: with connections that never end, a
second pod stayed idle while the first served every call). Two containers answer to the headless Service's name
on the Docker network, as two pods do in a cluster; a client dials the name as the workers do (dns:///…, round
robin) and each call's program prints the hostname of the pod that ran it."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest

from images.docker import Deployment

pytestmark = pytest.mark.images

SECONDS = 65
SECOND_REPLICA_AT = 8  # seconds into the client's run
CLIENT = """
import asyncio, json, sys, time
from services.common.channels import open_channel
from thinkmesh.v1 import sandbox_pb2, sandbox_pb2_grpc

async def main(target, seconds):
    calls, failed = [], []
    async with open_channel(target) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        request = sandbox_pb2.ExecuteRequest(code="import socket\\nprint(socket.gethostname())", timeout_ms=5000)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                reply = await stub.Execute(request, timeout=10)
                calls.append([round(time.monotonic() - started, 2), reply.stdout.strip()])
            except Exception as exc:
                failed.append(repr(exc)[:200])
            await asyncio.sleep(0.05)
    print(json.dumps({"calls": calls, "failed": failed}))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def test_a_second_sandbox_replica_serves_a_share_within_30_seconds(deployment: Deployment) -> None:
    deployment.serving("sandbox")
    first = deployment["sandbox"].pod
    second = dataclasses.replace(
        first,
        name=f"{first.name}-b",
        component="sandbox-b",
        options=tuple(f"{first.name}-b" if option == first.name else option for option in first.options),
    )
    target = deployment.manifests.settings("worker")["THINKMESH_SEARCH_SANDBOX_TARGET"]  # dns:///…-headless…
    output: dict[str, str] = {}

    def client() -> None:
        output["json"] = deployment.session.run_on_network(
            first, "python3", ["-c", CLIENT, target, str(SECONDS)], timeout=SECONDS + 60
        )

    runner = threading.Thread(target=client)
    runner.start()
    time.sleep(SECOND_REPLICA_AT)
    added = time.monotonic()
    deployment.session.start(second)
    deployment.serving("sandbox-b")
    serving_after = time.monotonic() - added  # seconds from its start until it served
    runner.join()
    result = json.loads(output["json"].strip().splitlines()[-1])
    assert not result["failed"], result["failed"][:3]  # no call lost while the replica joined
    hosts = {host for _, host in result["calls"]}
    assert hosts == {first.name, second.name}, hosts
    # Within 30 s of the second replica serving, it takes at least a third of the calls.
    window = [host for at, host in result["calls"] if at >= SECOND_REPLICA_AT + serving_after + 30]
    assert len(window) >= 20, f"only {len(window)} calls after the 30 s"
    share = window.count(second.name) / len(window)
    assert share >= 1 / 3, f"the new replica served {share:.0%} of the last calls"
