"""`thinkmesh secrets ensure` through the official `kubernetes` client against kmock's Kubernetes emulator.

kmock (the `kmock` fixture from its pytest plugin) serves an in-memory Kubernetes API over real HTTP on 127.0.0.1,
so URLs, bodies, headers and the mapping of error statuses are all exercised. The emulator applies a PATCH as a
recursive dict merge — for a Secret's `data` map that is what a real API server's merge patch does — and keeps no
`resourceVersion`, so the optimistic-concurrency guard is left to the unit tests; the Content-Type and the body
sent are pinned here instead.

The client is synchronous and the emulator runs on the test's event loop, so every client call goes through
`asyncio.to_thread` (or a subprocess): calling it on the loop would block the very server it waits for.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator
from kubernetes import client

from services.common.kube import KubeApiError
from services.common.kube_secrets import ALPHABET, ensure_secret, in_cluster_core

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRETS = "v1/secrets"
NS = "ml"
NAME = "thinkmesh-redis"
SECRET_URL = f"/api/v1/namespaces/{NS}/secrets/{NAME}"


def _values(cluster: KubernetesEmulator, name: str = NAME) -> dict[str, str]:
    data: dict[str, str] = cluster.objects[SECRETS, NS, name].raw["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _secret(data: dict[str, str]) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    labels = {"owner": "operator"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": NAME, "namespace": NS, "labels": labels},
        "data": encoded,
    }


def _forbidden(verb: str) -> dict[str, Any]:
    """The Status a real API server sends when RBAC denies `verb` on the Secret."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "reason": "Forbidden",
        "code": 403,
        "message": f'secrets "{NAME}" is forbidden: User "system:serviceaccount:{NS}:thinkmesh" cannot {verb} '
        f'resource "secrets" in API group "" in the namespace "{NS}"',
    }


@pytest.fixture
def core(kmock: KubernetesEmulator) -> Iterator[client.CoreV1Api]:
    # A private Configuration pointed at the emulator: the client's global default stays untouched.
    api_client = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
    yield client.CoreV1Api(api_client)
    api_client.close()  # type: ignore[no-untyped-call]  # the generated ApiClient.close has no annotations


@pytest.fixture
def kubeconfig(kmock: KubernetesEmulator, tmp_path: Path) -> Path:
    """A kubeconfig pointing at the emulator, as `kubectl` would use it outside a cluster."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "job", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "job"}}],
        "current-context": "kmock",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


async def _thinkmesh(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    """Run `python -m services.cli ARGS` as the Job would, outside a pod: credentials from the kubeconfig."""
    env = {key: value for key, value in os.environ.items() if key != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(kubeconfig)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow  # the CLI in a subprocess: importing the kubernetes client takes seconds
async def test_the_cli_creates_once_and_then_changes_nothing(kmock: KubernetesEmulator, kubeconfig: Path) -> None:
    args = ["secrets", "ensure", "--namespace", NS, "--name", NAME, "--random", "password", "--random", "tokens"]
    args += ["--label", "app.kubernetes.io/part-of=thinkmesh"]

    code, out, err = await _thinkmesh(kubeconfig, *args)

    assert (code, err) == (0, "")
    assert out == f"created Secret {NS}/{NAME} with keys password, tokens\n"
    stored = kmock.objects[SECRETS, NS, NAME].raw
    assert stored["type"] == "Opaque"
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/part-of": "thinkmesh"}
    first = _values(kmock)
    assert sorted(first) == ["password", "tokens"]
    assert all(len(value) == 40 and set(value) <= set(ALPHABET) for value in first.values())
    # The kubeconfig's credentials were used, so the Job would authenticate against a real cluster too.
    assert {request.headers.get("Authorization") for request in kmock} == {"Bearer test-token"}

    code, out, err = await _thinkmesh(kubeconfig, *args)

    assert (code, err) == (0, "")
    assert out == f"Secret {NS}/{NAME} unchanged: it already has every key\n"
    assert _values(kmock) == first
    # The second run only read: one GET, and the object was never written again.
    assert [(request.method.value, request.url.path) for request in kmock][-1:] == [("GET", SECRET_URL)]
    assert len(kmock["post"]) == 1 and len(kmock["patch"]) == 0
    assert len(kmock.objects[SECRETS, NS, NAME].history) == 1


async def test_only_the_missing_keys_are_added(kmock: KubernetesEmulator, core: client.CoreV1Api) -> None:
    kmock.objects[SECRETS, NS, NAME] = _secret({"password": "chosen-by-the-operator"})

    result = await asyncio.to_thread(ensure_secret, core, NS, NAME, ["password", "tokens"], length=32)

    assert result.action == "added" and result.keys == ("tokens",)
    values = _values(kmock)
    assert values["password"] == "chosen-by-the-operator"
    assert len(values["tokens"]) == 32 and values["tokens"].isalnum()
    assert kmock.objects[SECRETS, NS, NAME].raw["metadata"]["labels"] == {"owner": "operator"}  # not ours to change
    # What went over the wire: one merge patch naming only the missing key.
    (patch,) = list(kmock["patch"])
    assert patch.url.path == SECRET_URL
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert set(patch.data["data"]) == {"tokens"}
    assert len(kmock["post"]) == 0


async def test_a_create_that_loses_the_race_adds_to_the_winners_secret(
    kmock: KubernetesEmulator, core: client.CoreV1Api
) -> None:
    # Another Job created the Secret after our read: the first GET still says 404, our POST meets 409.
    kmock.objects[SECRETS, NS, NAME] = _secret({"password": "the-winners"})
    kmock["get", SECRET_URL][:1] << 404 << {"kind": "Status", "code": 404, "reason": "NotFound", "message": "gone"}

    result = await asyncio.to_thread(ensure_secret, core, NS, NAME, ["password", "tokens"])

    assert [request.method.value for request in kmock] == ["GET", "POST", "GET", "PATCH"]
    assert result.action == "added" and result.keys == ("tokens",)
    assert _values(kmock)["password"] == "the-winners"


@pytest.mark.slow  # the CLI in a subprocess: importing the kubernetes client takes seconds
async def test_forbidden_is_a_clear_error_naming_the_verb(
    kmock: KubernetesEmulator, core: client.CoreV1Api, kubeconfig: Path
) -> None:
    kmock["get", SECRET_URL] << 403 << _forbidden("get")

    code, out, err = await _thinkmesh(
        kubeconfig, "secrets", "ensure", "--namespace", NS, "--name", NAME, "--random", "p"
    )

    assert (code, out) == (1, "")
    assert err.startswith(f"thinkmesh: Forbidden: cannot get Secret {NS}/{NAME}: ")
    assert f"needs RBAC verb 'get' on 'secrets' in namespace {NS}" in err
    assert f'User "system:serviceaccount:{NS}:thinkmesh" cannot get resource "secrets"' in err
    assert err.count("\n") == 1  # one line, no traceback
    assert len(kmock["post"]) == 0


async def test_forbidden_patch_names_patch(kmock: KubernetesEmulator, core: client.CoreV1Api) -> None:
    kmock.objects[SECRETS, NS, NAME] = _secret({"password": "x"})
    kmock["patch", SECRET_URL] << 403 << _forbidden("patch")

    with pytest.raises(KubeApiError, match=r"^Forbidden: cannot patch Secret ml/thinkmesh-redis: .*RBAC verb 'patch'"):
        await asyncio.to_thread(ensure_secret, core, NS, NAME, ["password", "tokens"])


async def test_in_cluster_core_falls_back_to_the_kubeconfig(
    kmock: KubernetesEmulator, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    core = in_cluster_core()
    try:
        result = await asyncio.to_thread(ensure_secret, core, NS, NAME, ["password"])
    finally:
        core.api_client.close()  # type: ignore[no-untyped-call]

    assert result.action == "created"
    assert {request.headers.get("Authorization") for request in kmock} == {"Bearer test-token"}


async def test_an_unreachable_api_server_is_an_api_error(tmp_path: Path) -> None:
    # A port nothing listens on (the kmock server's own port after it closed would race; port 9 is discard).
    unreachable = client.CoreV1Api(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    unreachable.api_client.configuration.retries = 0
    try:
        with pytest.raises(KubeApiError, match=r"cannot reach the Kubernetes API at http://127.0.0.1:9"):
            await asyncio.to_thread(ensure_secret, unreachable, NS, NAME, ["password"])
    finally:
        unreachable.api_client.close()  # type: ignore[no-untyped-call]
