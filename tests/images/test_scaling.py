"""A new replica takes its share of the calls within seconds (#26: with connections that never end, a second pod
stayed idle while the first served every call). Two containers answer to the headless Service's name on the
Docker network, as two pods do in a cluster; a client dials the name as the workers do (dns:///…, round robin).
What each replica served is read from its own Prometheus counter of finished calls."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.request

import pytest

from images.docker import Container, Deployment
from support.tiny_models import QUESTION

pytestmark = pytest.mark.images

SECONDS = 65
SECOND_REPLICA_AT = 8  # seconds into the client's run
# component → the method the client calls (the counter's label) and the call, as Python in the client.
CALLS = {
    "sandbox": (
        "/thinkmesh.v1.SandboxService/Execute",
        "sandbox_pb2_grpc.SandboxServiceStub(channel).Execute("
        "sandbox_pb2.ExecuteRequest(code='print(6 * 7)', timeout_ms=5000), timeout=10)",
    ),
    "policy": (
        "/thinkmesh.v1.PolicyService/GenerateSteps",
        "policy_pb2_grpc.PolicyServiceStub(channel).GenerateSteps(policy_pb2.GenerateStepsRequest("
        f"prompts=[policy_pb2.StepPrompt(question={QUESTION!r})], n=1, max_new_tokens=2, seed=1), timeout=10)",
    ),
}
CLIENT = """
import asyncio, json, sys, time
from services.common.channels import open_channel
from thinkmesh.v1 import policy_pb2, policy_pb2_grpc, sandbox_pb2, sandbox_pb2_grpc

async def main(target, seconds):
    calls, failed = [], []
    async with open_channel(target) as channel:
        started = time.time()
        while time.time() - started < seconds:
            try:
                await CALL
                calls.append(time.time())
            except Exception as exc:
                failed.append(repr(exc)[:200])
            await asyncio.sleep(0.05)
    print(json.dumps({"calls": calls, "failed": failed}))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def served(container: Container, method: str) -> float:
    """The replica's count of calls to `method` that finished OK (thinkmesh_grpc_requests_total)."""
    with urllib.request.urlopen(f"http://{container.address('metrics')}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    pattern = (
        rf'^thinkmesh_grpc_requests_total\{{(?=[^}}]*code="OK")(?=[^}}]*method="{re.escape(method)}")[^}}]*\}} (\S+)$'
    )
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


@pytest.mark.parametrize("component", ["sandbox", "policy"])
def test_a_second_replica_serves_a_share_within_30_seconds(deployment: Deployment, component: str) -> None:
    deployment.serving(component)
    method, call = CALLS[component]
    first = deployment[component].pod
    second = dataclasses.replace(
        first,
        name=f"{first.name}-b",
        component=f"{component}-b",
        options=tuple(f"{first.name}-b" if option == first.name else option for option in first.options),
        init=(),  # its init container (waiting for the store's model) ran for the first replica already
    )
    # What the workers dial: dns:///…-headless…
    target = deployment.manifests.settings("worker-solve")[f"THINKMESH_SEARCH_{component.upper()}_TARGET"]
    output: dict[str, str] = {}

    def client() -> None:
        script = CLIENT.replace("CALL", call)
        output["json"] = deployment.session.run_on_network(
            first, "python3", ["-c", script, target, str(SECONDS)], timeout=SECONDS + 60
        )

    runner = threading.Thread(target=client)
    runner.start()
    try:
        time.sleep(SECOND_REPLICA_AT)
        replica = deployment.session.start(second)
        deployment.serving(second.component)
        # From 30 s after the second replica serves (wall clock: the client's calls carry the same host clock).
        time.sleep(30)
        window_start = time.time()
        before = served(replica, method)
    finally:
        runner.join()
    after = served(replica, method)
    with deployment.explain(component, second.component):
        result = json.loads(output["json"].strip().splitlines()[-1])
        assert not result["failed"], result["failed"][:3]  # no call lost while the replica joined
        window = [at for at in result["calls"] if at >= window_start]
        assert len(window) >= 20, f"only {len(window)} calls after the 30 s"
        share = (after - before) / len(window)
        assert share >= 1 / 3, f"the new replica served {share:.0%} of the last {len(window)} calls"
