"""Rolling the serving Deployments through the official `kubernetes` client against kmock's Kubernetes emulator.

kmock (the `kmock` fixture from its pytest plugin) serves an in-memory Kubernetes API over HTTP on 127.0.0.1 and
a random port; the real client talks to it with real HTTP, so serialization, URLs, headers and error mapping are
all exercised. The emulator applies a PATCH as a recursive dict merge whatever the Content-Type — for an
annotations map that is what a real API server's strategic merge does too — so the tests also pin the
Content-Type, which a real server would check.

The client is synchronous and the emulator runs on the test's event loop, so every client call goes through
`asyncio.to_thread`: calling it on the loop would block the very server it waits for.

The last test runs the trainer's side of a rollout: its wiring rolls both Deployments after a publish, and its
wait holds the next search while the old pods (RELOAD=off) still serve the previous versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator
from kubernetes import client

from services.common.errors import InvalidInput, NotFound
from services.common.hot_reload import ModelSource
from services.common.server import GrpcServer, ServerSettings, Service
from services.common.settings import load_settings
from services.common.store import Lineage, ModelStore
from services.policy.core import Limits, PolicyCore
from services.policy.servicer import PolicyServicer
from services.ppm.core import PPMCore
from services.ppm.servicer import PPMServicer
from services.trainer.kube import (
    ANNOTATION_RESTARTED,
    ANNOTATION_VERSION,
    Rollout,
    in_cluster_apps,
    roll_deployments,
)
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import kube_rollout, wait_for_current
from support.versioned_model import VersionedModel
from thinkmesh.v1 import policy_pb2_grpc, ppm_pb2_grpc

DEPLOYMENTS = "apps/v1/deployments"
NAMESPACE = "ml"
POLICY = "thinkmesh-policy"
PPM = "thinkmesh-ppm"
ROLLOUT = Rollout(namespace=NAMESPACE, policy_deployment=POLICY, ppm_deployment=PPM)
T1 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
# An hour later, written in UTC+2: the annotation must still be the UTC instant.
T2 = datetime(2025, 3, 4, 8, 6, 7, tzinfo=timezone(timedelta(hours=2)))


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment as `kubectl apply` would have stored it, with annotations the roll must keep."""
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": f"ghcr.io/thinkmesh/{name}:0.1.0",
                            "args": ["--port", "50052"],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ]
                },
            },
        },
    }


ORIGINAL = {POLICY: _deployment(POLICY, replicas=3), PPM: _deployment(PPM, replicas=2)}


def _rolled(name: str, version: str, restarted_at: str) -> dict[str, Any]:
    """The original Deployment with only the two roll annotations added: everything else must be identical."""
    expected = copy.deepcopy(ORIGINAL[name])
    expected["spec"]["template"]["metadata"]["annotations"].update(
        {ANNOTATION_VERSION: version, ANNOTATION_RESTARTED: restarted_at}
    )
    return expected


def _stored(cluster: KubernetesEmulator, name: str) -> dict[str, Any]:
    # `.raw` is plain dicts, so `==` below is Python's exact equality rather than kmock's partial matching.
    return cluster.objects[DEPLOYMENTS, NAMESPACE, name].raw


def _annotations(cluster: KubernetesEmulator, name: str) -> dict[str, str]:
    annotations: dict[str, str] = _stored(cluster, name)["spec"]["template"]["metadata"]["annotations"]
    return annotations


@pytest.fixture
def cluster(kmock: KubernetesEmulator) -> KubernetesEmulator:
    for name, body in ORIGINAL.items():
        kmock.objects[DEPLOYMENTS, NAMESPACE, name] = copy.deepcopy(body)
    return kmock


@pytest.fixture
def apps(cluster: KubernetesEmulator) -> Iterator[client.AppsV1Api]:
    # A private Configuration pointed at the emulator: the client's global default stays untouched.
    api_client = client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))
    yield client.AppsV1Api(api_client)
    api_client.close()  # type: ignore[no-untyped-call]  # the generated ApiClient.close has no annotations


async def test_roll_sets_each_version_and_leaves_the_rest_untouched(
    cluster: KubernetesEmulator, apps: client.AppsV1Api
) -> None:
    patched = await asyncio.to_thread(ROLLOUT.roll, apps, "policy-r3", "ppm-r2", now=T1)

    assert patched == [POLICY, PPM]
    assert _stored(cluster, POLICY) == _rolled(POLICY, "policy-r3", "2025-03-04T05:06:07Z")
    assert _stored(cluster, PPM) == _rolled(PPM, "ppm-r2", "2025-03-04T05:06:07Z")
    # What went over the wire: one strategic-merge patch per Deployment, touching only the template's annotations.
    patches = list(cluster["patch"])
    assert [request.url.path for request in patches] == [
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{POLICY}",
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{PPM}",
    ]
    assert {request.headers["Content-Type"] for request in patches} == {"application/strategic-merge-patch+json"}
    assert patches[0].data == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {ANNOTATION_VERSION: "policy-r3", ANNOTATION_RESTARTED: "2025-03-04T05:06:07Z"}
                }
            }
        }
    }
    # And the client reads back the rolled object as a typed model.
    read = await asyncio.to_thread(apps.read_namespaced_deployment, PPM, NAMESPACE)
    assert read.spec is not None and read.spec.template.metadata is not None
    assert read.spec.template.metadata.annotations == _annotations(cluster, PPM)
    assert read.spec.replicas == 2


async def test_second_roll_replaces_version_and_timestamp(cluster: KubernetesEmulator, apps: client.AppsV1Api) -> None:
    await asyncio.to_thread(ROLLOUT.roll, apps, "policy-r3", "ppm-r3", now=T1)
    await asyncio.to_thread(ROLLOUT.roll, apps, "policy-r4", "ppm-r4", now=T2)

    assert _stored(cluster, POLICY) == _rolled(POLICY, "policy-r4", "2025-03-04T06:06:07Z")
    assert _stored(cluster, PPM) == _rolled(PPM, "ppm-r4", "2025-03-04T06:06:07Z")
    # created once, patched twice: no delete/recreate behind the roll's back.
    assert len(cluster.objects[DEPLOYMENTS, NAMESPACE, POLICY].history) == 3


async def test_default_timestamp_is_now_in_utc(cluster: KubernetesEmulator, apps: client.AppsV1Api) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    patched = await asyncio.to_thread(roll_deployments, apps, NAMESPACE, [PPM], "ppm-r5")
    after = datetime.now(UTC)

    assert patched == [PPM]
    annotations = _annotations(cluster, PPM)
    assert annotations[ANNOTATION_VERSION] == "ppm-r5"
    restarted = datetime.strptime(annotations[ANNOTATION_RESTARTED], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= restarted <= after
    assert ANNOTATION_VERSION not in _annotations(cluster, POLICY)  # only the named Deployment rolled


@pytest.mark.parametrize(
    "roll",
    [
        pytest.param(
            lambda apps: Rollout(NAMESPACE, POLICY, "thinkmesh-ppm-typo").roll(apps, "policy-r3", "ppm-r3"),
            id="rollout-ppm-missing",
        ),
        pytest.param(
            lambda apps: roll_deployments(apps, NAMESPACE, [POLICY, PPM, "thinkmesh-ppm-typo"], "r3"),
            id="missing-listed-last",
        ),
    ],
)
async def test_missing_deployment_raises_not_found_and_patches_nothing(
    cluster: KubernetesEmulator, apps: client.AppsV1Api, roll: Any
) -> None:
    with pytest.raises(NotFound, match=r"ml/thinkmesh-ppm-typo"):
        await asyncio.to_thread(roll, apps)

    assert len(cluster["patch"]) == 0
    assert _stored(cluster, POLICY) == ORIGINAL[POLICY]
    assert _stored(cluster, PPM) == ORIGINAL[PPM]


async def test_bad_arguments_are_refused_before_any_request(
    cluster: KubernetesEmulator, apps: client.AppsV1Api
) -> None:
    with pytest.raises(InvalidInput, match="empty model version"):
        await asyncio.to_thread(ROLLOUT.roll, apps, "policy-r3", " ")
    with pytest.raises(InvalidInput, match="share the Deployment"):
        await asyncio.to_thread(Rollout(NAMESPACE, POLICY, POLICY).roll, apps, "a", "b")
    with pytest.raises(ValueError, match="timezone-aware"):
        await asyncio.to_thread(ROLLOUT.roll, apps, "a", "b", now=datetime(2025, 1, 1))

    assert len(cluster) == 0  # not even a read


def _kubeconfig(cluster: KubernetesEmulator, directory: Path) -> Path:
    """A kubeconfig file for the emulated API server, with a bearer token."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": str(cluster.url).rstrip("/")}}],
        "users": [{"name": "trainer", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "trainer"}}],
        "current-context": "kmock",
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))  # JSON is YAML
    return path


async def test_in_cluster_apps_falls_back_to_kubeconfig(
    cluster: KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not in a pod: no service host, so in-cluster loading fails and the kubeconfig named by KUBECONFIG is used.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = _kubeconfig(cluster, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(path))

    apps = in_cluster_apps()
    try:
        patched = await asyncio.to_thread(ROLLOUT.roll, apps, "policy-r1", "ppm-r1", now=T1)
    finally:
        apps.api_client.close()

    assert patched == [POLICY, PPM]
    assert _annotations(cluster, POLICY)[ANNOTATION_VERSION] == "policy-r1"
    # The kubeconfig's credentials were used, so the wiring would authenticate against a real cluster too.
    assert {request.headers.get("Authorization") for request in cluster} == {"Bearer test-token"}


@contextlib.asynccontextmanager
async def _pods(store: ModelStore) -> AsyncIterator[tuple[str, str]]:
    """A policy pod and a PPM pod as the chart runs them under a trainer's rollout: RELOAD=off, so each serves the
    version current when it started; (policy address, PPM address)."""

    async def load(name: str) -> VersionedModel:
        return VersionedModel(name)

    policy = PolicyCore(Limits(default_n=1, max_n=1, max_prompts=1, default_max_new_tokens=1, max_new_tokens=1))
    ppm = PPMCore(1, 1)
    policy_servicer, ppm_servicer = PolicyServicer(policy), PPMServicer(ppm)
    sources: list[ModelSource[Any]] = [
        ModelSource(policy.slot, "policy", lambda: store.current_name("policy"), load, interval_s=0.01, reload="off"),
        ModelSource(ppm.slot, "ppm", lambda: store.current_name("ppm"), load, interval_s=0.01, reload="off"),
    ]
    servers = [
        GrpcServer(
            ServerSettings(),
            [Service("policy", lambda s: policy_pb2_grpc.add_PolicyServiceServicer_to_server(policy_servicer, s))],
        ),
        GrpcServer(
            ServerSettings(), [Service("ppm", lambda s: ppm_pb2_grpc.add_PPMServiceServicer_to_server(ppm_servicer, s))]
        ),
    ]
    addresses = [await server.start() for server in servers]
    for source in sources:
        await source.start()
    try:
        yield addresses[0], addresses[1]
    finally:
        for server, source in zip(servers, sources, strict=True):
            await server.stop(0)
            await source.stop()


async def test_the_trainer_rolls_the_deployments_and_waits_for_the_new_pods(
    cluster: KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(cluster, tmp_path)))
    store = ModelStore(tmp_path / "store")

    def write(directory: Path) -> None:
        (directory / "config.json").write_text("{}")

    def publish() -> None:
        for kind in ("policy", "ppm"):
            store.publish(kind, write, Lineage())

    publish()
    async with _pods(store) as (policy, ppm):
        settings = load_settings(
            TrainerSettings,
            environ={
                "THINKMESH_TRAINER_KUBE_NAMESPACE": NAMESPACE,
                "THINKMESH_TRAINER_KUBE_POLICY_DEPLOYMENT": POLICY,
                "THINKMESH_TRAINER_KUBE_PPM_DEPLOYMENT": PPM,
            },
            policy_target=policy,
            ppm_target=ppm,
        )
        await asyncio.to_thread(wait_for_current(settings, store, timeout_s=10))
        # A round publishes v2 and rolls the Deployments; the running pods keep serving v1 (RELOAD=off) …
        publish()
        roll = kube_rollout(settings)
        assert roll is not None
        await asyncio.to_thread(roll, "v2", "v2")
        assert _annotations(cluster, POLICY)[ANNOTATION_VERSION] == "v2"
        assert _annotations(cluster, PPM)[ANNOTATION_VERSION] == "v2"
        await asyncio.sleep(0.1)
        # … so the next search waits for the pods the rollout starts.
        with pytest.raises(TimeoutError, match=r"'policy': \['v1'\], 'ppm': \['v1'\]"):
            await asyncio.to_thread(wait_for_current(settings, store, timeout_s=0.5))
    async with _pods(store) as (policy, ppm):  # the Deployment controller's new pods load the current version
        settings = dataclasses.replace(
            settings, targets=dataclasses.replace(settings.targets, policy_target=policy, ppm_target=ppm)
        )
        await asyncio.to_thread(wait_for_current(settings, store, timeout_s=10))
