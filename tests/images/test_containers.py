"""Each image, run with the chart's security context, serves and answers one real call; the sandbox reports the
isolation layers that context leaves it (docs/sandbox.md)."""

from __future__ import annotations

import json

import grpc
import pytest

from images.docker import Deployment
from services.sandbox.layers import LAYER_NAMES
from support.tiny_models import QUESTION, STEPS
from thinkmesh.v1 import (
    common_pb2,
    policy_pb2,
    policy_pb2_grpc,
    ppm_pb2,
    ppm_pb2_grpc,
    sandbox_pb2,
    sandbox_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

pytestmark = pytest.mark.images

# sympy and numpy come pre-imported in the sandbox; this shows the image has both.
PROGRAM = "import numpy, sympy\nprint(sympy.Rational(1, 3) + sympy.Rational(1, 6), numpy.arange(4).sum())\n"


def test_sandbox_executes_a_program(deployment: Deployment) -> None:
    with deployment.explain("sandbox"), deployment.connect("sandbox") as channel:
        reply = sandbox_pb2_grpc.SandboxServiceStub(channel).Execute(
            sandbox_pb2.ExecuteRequest(code=PROGRAM, timeout_ms=10_000), timeout=30
        )
        assert reply.status == sandbox_pb2.EXECUTE_STATUS_OK, reply.stderr
        assert reply.stdout == "1/2 6\n"


def test_sandbox_logs_the_isolation_layers_its_security_context_allows(deployment: Deployment) -> None:
    deployment.serving("sandbox")  # the layers are logged before it serves
    pod = deployment.manifests.pod("sandbox")["spec"]["securityContext"]
    container = deployment.manifests.container("sandbox")["securityContext"]
    # What docs/sandbox.md ("In Kubernetes") rests on, as the chart renders it: a non-root uid and no capability.
    assert container.get("runAsUser", pod["runAsUser"]) != 0
    assert container["capabilities"] == {"drop": ["ALL"]}
    seccomp = container.get("seccompProfile", pod.get("seccompProfile"))

    logs = deployment["sandbox"].logs(tail=None)
    with deployment.explain("sandbox"):
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        layers = {line["layer"]: line for line in lines if "layer" in line}
        assert list(layers) == list(LAYER_NAMES), "one line per layer, in the order they are applied"
        active = [name for name, line in layers.items() if line["active"]]
        if seccomp["type"] == "Localhost":
            # The chart's profile (files/seccomp/sandbox.json, run here by the kubelet from the rendered ConfigMap)
            # adds to the runtime default the unshare() and mount() of a user namespace: the zygote's empty network
            # namespace and each program's private tmpfs work, and each program counts its processes in a user
            # namespace of its own. The uid stays the server's, and /proc (a mount of its own needs root) the pod's.
            assert seccomp["localhostProfile"] == "thinkmesh/sandbox.json"
            # Landlock needs no privilege (the runtime default allows its calls); /proc of its own needs root.
            assert active == ["process", "filesystem", "network", "rlimits", "environment", "landlock", "seccomp"]
            assert layers["uid"]["level"] == "warning"
            assert "the server is not root" in layers["uid"]["msg"]
            assert "per program, counted in a user namespace of its own" in layers["rlimits"]["msg"]
        else:
            # The runtime's default seccomp profile allows unshare() only with CAP_SYS_ADMIN, so no user namespace
            # can be had.
            assert seccomp["type"] == "RuntimeDefault"
            # Per process, resource limits, a clean environment and the syscall filter hold in any pod.
            assert active == ["process", "rlimits", "environment", "landlock", "seccomp"]
            # Without a user namespace: no private tmpfs and mount namespace, no empty network namespace; the
            # server's uid is not root, so programs keep it. Each says why, as a warning.
            assert all(layers[name]["level"] == "warning" for name in ("filesystem", "network", "uid"))
            assert "no user namespace allowed" in layers["filesystem"]["msg"]
            assert "no user namespace allowed" in layers["network"]["msg"]
            assert "the server is not root" in layers["uid"]["msg"]
            # Nor a process budget of each program's own: it says that the whole uid shares it.
            assert "for every process of uid" in layers["rlimits"]["msg"]
        (ready,) = [line for line in lines if line["msg"] == "sandbox ready"]
        assert ready["layers_active"] == active


def test_policy_generates_steps_with_the_imported_model(deployment: Deployment) -> None:
    request = policy_pb2.GenerateStepsRequest(
        prompts=[policy_pb2.StepPrompt(question=QUESTION), policy_pb2.StepPrompt(question=QUESTION, steps=STEPS[:1])],
        n=2,
        temperature=1.0,
        max_new_tokens=8,
        seed=7,
    )
    with deployment.explain("policy"), deployment.connect("policy") as channel:
        reply = policy_pb2_grpc.PolicyServiceStub(channel).GenerateSteps(request, timeout=60)
        assert reply.model_version == "v1"
        assert [len(result.candidates) for result in reply.results] == [2, 2]
        assert all(0 < c.num_tokens <= 8 and c.logprob < 0 for result in reply.results for c in result.candidates)


def test_ppm_scores_every_step_in_range(deployment: Deployment) -> None:
    request = ppm_pb2.ScoreStepsRequest(
        items=[ppm_pb2.ScoreItem(question=QUESTION, steps=STEPS), ppm_pb2.ScoreItem(question=QUESTION, steps=STEPS[:1])]
    )
    with deployment.explain("ppm"), deployment.connect("ppm") as channel:
        reply = ppm_pb2_grpc.PPMServiceStub(channel).ScoreSteps(request, timeout=60)
        assert reply.model_version == "v1"
        assert [len(result.scores) for result in reply.results] == [len(STEPS), 1]
        assert all(-1 <= score <= 1 for result in reply.results for score in result.scores)


def test_search_solves_through_a_worker_and_redis(deployment: Deployment) -> None:
    for component in ("sandbox", "policy", "ppm"):  # what the worker calls
        deployment.serving(component)
    request = search_pb2.SolveRequest(problem=QUESTION, rollouts=2, candidates=2, max_depth=4)
    with deployment.explain("search", "worker-solve", "worker-round", "redis"), deployment.connect("search") as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        # The chart turns on bearer tokens for the API.
        with pytest.raises(grpc.RpcError) as refused:
            stub.Solve(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Solve(request, timeout=120, metadata=[("authorization", f"Bearer {deployment.token}")])
        # An untrained micro policy rarely writes code or an answer (so the solution may be empty): what shows is
        # that the worker ran the search to its budget through the policy and the PPM of the imported version.
        assert reply.stats.rollouts == 2 and reply.stats.nodes > 1
        assert reply.stats.policy_calls > 0 and reply.stats.ppm_calls > 0
        assert (reply.policy_version, reply.ppm_version) == ("v1", "v1")


def test_trainer_serves_and_lists_the_imported_models(deployment: Deployment) -> None:
    with deployment.explain("trainer"), deployment.connect("trainer") as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:  # the API takes a token, as SearchService does
            stub.ListModels(trainer_pb2.ListModelsRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = [("authorization", f"Bearer {deployment.token}")]
        reply = stub.ListModels(trainer_pb2.ListModelsRequest(), timeout=30, metadata=token)
        assert sorted((m.kind, m.version, m.current, m.source) for m in reply.models) == [
            (common_pb2.MODEL_KIND_POLICY, "v1", True, "import"),
            (common_pb2.MODEL_KIND_PPM, "v1", True, "import"),
        ]
