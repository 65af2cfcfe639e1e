"""`ensure_secret` and `thinkmesh secrets ensure` against a small in-memory CoreV1Api: arguments, races, errors.

The real client against an emulated API server is tests/integration/common/test_kube_secrets_kmock.py; here a fake
stands in for CoreV1Api so that races (a create that loses, a patch computed from a stale read) and transport
failures can be staged exactly.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from services.cli.main import main
from services.common import kube_secrets
from services.common.errors import InvalidInput
from services.common.kube import KubeApiError
from services.common.kube_secrets import (
    ALPHABET,
    DEFAULT_LENGTH,
    EnsureResult,
    ensure_secret,
    pod_namespace,
    random_value,
)

NS = "ml"
NAME = "thinkmesh-redis"


def _decode(data: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _api_exception(status: int, message: str = "") -> ApiException:
    exc = ApiException(status=status, reason={403: "Forbidden", 409: "Conflict", 500: "Internal"}.get(status, "X"))
    exc.body = f'{{"kind": "Status", "code": {status}, "message": "{message}"}}'.encode()
    return exc


class FakeCore:
    """Secrets in a dict, with the calls recorded and optional scripted failures per verb (consumed in order)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, list[Exception]] = {"get": [], "create": [], "patch": []}
        self.before: dict[str, Callable[[], None]] = {}  # verb → action run just before the call is served
        self.version = 0
        self.api_client = client.ApiClient(client.Configuration(host="https://kube.example:6443"))

    def put(self, name: str, data: dict[str, str]) -> None:
        self.version += 1
        encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        self.secrets[NS, name] = {"data": encoded, "labels": None, "version": str(self.version)}

    def _serve(self, verb: str, argument: Any) -> None:
        self.calls.append((verb, argument))
        if verb in self.before:
            self.before.pop(verb)()
        if self.fail[verb]:
            raise self.fail[verb].pop(0)

    def read_namespaced_secret(self, name: str, namespace: str, **kwargs: Any) -> client.V1Secret:
        assert kwargs["_request_timeout"]  # every call has a deadline
        self._serve("get", name)
        stored = self.secrets.get((namespace, name))
        if stored is None:
            raise _api_exception(404)
        metadata = client.V1ObjectMeta(name=name, namespace=namespace, resource_version=stored["version"])
        return client.V1Secret(metadata=metadata, data=dict(stored["data"]) or None)

    def create_namespaced_secret(self, namespace: str, body: client.V1Secret, **kwargs: Any) -> client.V1Secret:
        assert kwargs["_request_timeout"]
        self._serve("create", body)
        assert body.metadata is not None and body.metadata.name is not None
        if (namespace, body.metadata.name) in self.secrets:
            raise _api_exception(409, "already exists")
        self.version += 1
        self.secrets[namespace, body.metadata.name] = {
            "data": dict(body.data or {}),
            "labels": body.metadata.labels,
            "version": str(self.version),
        }
        return body

    def patch_namespaced_secret(self, name: str, namespace: str, body: dict[str, Any], **kwargs: Any) -> None:
        assert kwargs["_content_type"] == "application/merge-patch+json"
        assert kwargs["_request_timeout"]
        self._serve("patch", body)
        stored = self.secrets.get((namespace, name))
        if stored is None:
            raise _api_exception(404)
        if body.get("metadata", {}).get("resourceVersion") not in (None, stored["version"]):
            raise _api_exception(409, "the object has been modified")
        self.version += 1
        stored["data"].update(body["data"])
        stored["version"] = str(self.version)

    def values(self, name: str = NAME) -> dict[str, str]:
        return _decode(self.secrets[NS, name]["data"])

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


def _ensure(core: FakeCore, keys: list[str], **kwargs: Any) -> EnsureResult:
    return ensure_secret(cast(client.CoreV1Api, core), NS, NAME, keys, **kwargs)


def test_random_values_are_alphanumeric_of_the_asked_length_and_distinct() -> None:
    values = {random_value() for _ in range(50)}
    assert len(values) == 50
    assert all(len(value) == DEFAULT_LENGTH and set(value) <= set(ALPHABET) for value in values)
    assert len(random_value(64)) == 64


def test_creates_with_every_key_and_labels(core: FakeCore) -> None:
    result = _ensure(core, ["password", "tokens"], labels={"app.kubernetes.io/part-of": "thinkmesh"}, length=24)

    assert result == EnsureResult(NS, NAME, "created", ("password", "tokens"))
    assert result.describe() == f"created Secret {NS}/{NAME} with keys password, tokens"
    values = core.values()
    assert sorted(values) == ["password", "tokens"]
    assert all(len(value) == 24 and value.isalnum() for value in values.values())
    assert values["password"] != values["tokens"]
    assert core.secrets[NS, NAME]["labels"] == {"app.kubernetes.io/part-of": "thinkmesh"}
    created = core.calls[1][1]
    assert created.type == "Opaque" and created.string_data is None


def test_existing_with_every_key_is_left_alone(core: FakeCore) -> None:
    core.put(NAME, {"password": "keep-me", "extra": "also"})

    result = _ensure(core, ["password"])

    assert result.action == "unchanged" and result.keys == ()
    assert result.describe() == f"Secret {NS}/{NAME} unchanged: it already has every key"
    assert core.verbs() == ["get"]
    assert core.values() == {"password": "keep-me", "extra": "also"}


def test_adds_only_the_missing_keys_with_the_version_it_read(core: FakeCore) -> None:
    core.put(NAME, {"password": "keep-me"})

    result = _ensure(core, ["password", "tokens", "tokens"])  # a key named twice is generated once

    assert result == EnsureResult(NS, NAME, "added", ("tokens",))
    assert result.describe() == f"added keys tokens to Secret {NS}/{NAME}; existing keys unchanged"
    patch = core.calls[-1][1]
    assert set(patch["data"]) == {"tokens"}
    assert patch["metadata"] == {"resourceVersion": "1"}
    assert core.values()["password"] == "keep-me"


def test_a_lost_create_race_reads_the_winner_and_adds_what_it_lacks(core: FakeCore) -> None:
    # Another Job creates the Secret between our read (404) and our create (409).
    core.before["create"] = lambda: core.put(NAME, {"password": "theirs"})

    result = _ensure(core, ["password", "tokens"])

    assert core.verbs() == ["get", "create", "get", "patch"]
    assert result.action == "added" and result.keys == ("tokens",)
    assert core.values()["password"] == "theirs"


def test_a_stale_patch_is_refused_and_recomputed_from_a_fresh_read(core: FakeCore) -> None:
    core.put(NAME, {"password": "keep-me"})
    # Another writer adds `tokens` after our read: our patch (computed from the old version) must not overwrite it.
    core.before["patch"] = lambda: core.put(NAME, {"password": "keep-me", "tokens": "theirs"})

    result = _ensure(core, ["password", "tokens"])

    assert core.verbs() == ["get", "patch", "get"]
    assert result.action == "unchanged"
    assert core.values() == {"password": "keep-me", "tokens": "theirs"}


def test_a_secret_deleted_before_the_patch_is_created_again(core: FakeCore) -> None:
    core.put(NAME, {"password": "old"})
    core.before["patch"] = lambda: core.secrets.clear()

    result = _ensure(core, ["password", "tokens"])

    assert core.verbs() == ["get", "patch", "get", "create"]
    assert result.action == "created"


def test_endless_conflicts_give_up_with_a_message(core: FakeCore) -> None:
    core.put(NAME, {})
    core.fail["patch"] = [_api_exception(409) for _ in range(10)]

    with pytest.raises(KubeApiError, match="kept changing"):
        _ensure(core, ["password"])
    assert core.verbs().count("patch") == 5


@pytest.mark.parametrize(
    ("verb", "setup"),
    [
        ("get", lambda core: None),
        ("create", lambda core: None),
        ("patch", lambda core: core.put(NAME, {})),
    ],
)
def test_forbidden_names_the_missing_rbac_verb(core: FakeCore, verb: str, setup: Callable[[FakeCore], None]) -> None:
    setup(core)
    core.fail[verb] = [_api_exception(403, f'secrets is forbidden: User \\"sa\\" cannot {verb} resource')]

    with pytest.raises(KubeApiError) as raised:
        _ensure(core, ["password"])

    message = str(raised.value)
    assert message.startswith(f"Forbidden: cannot {verb} Secret {NS}/{NAME}")
    assert f"RBAC verb '{verb}' on 'secrets' in namespace {NS}" in message
    assert f'User "sa" cannot {verb} resource' in message  # the API server's own words


def test_other_api_errors_and_an_unreachable_server_are_api_errors(core: FakeCore) -> None:
    from urllib3.exceptions import MaxRetryError

    core.fail["get"] = [_api_exception(500, "etcd is down")]
    with pytest.raises(KubeApiError, match=r"Kubernetes API error 500 Internal on get Secret ml/thinkmesh-redis: etcd"):
        _ensure(core, ["password"])

    core.fail["get"] = [MaxRetryError(None, "/api/v1/namespaces/ml/secrets/x", "connection refused")]  # type: ignore[arg-type]
    with pytest.raises(KubeApiError, match=r"cannot reach the Kubernetes API at https://kube.example:6443"):
        _ensure(core, ["password"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"namespace": "ML"}, "namespace 'ML'"),
        ({"name": "Redis_Password"}, "Secret name 'Redis_Password'"),
        ({"keys": []}, "no key"),
        ({"keys": ["ok", "not/ok"]}, "Secret key 'not/ok'"),
        ({"keys": [".."]}, "Secret key '..'"),
        ({"length": 8}, "length 8 is too short"),
        ({"labels": {"-bad": "x"}}, "label key '-bad'"),
        ({"labels": {"Bad.Prefix/name": "x"}}, "label key 'Bad.Prefix/name'"),
        ({"labels": {"app": "has space"}}, "label value 'has space'"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(core: FakeCore, kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"namespace": NS, "name": NAME, "keys": ["password"]} | kwargs
    with pytest.raises(InvalidInput, match=match):
        ensure_secret(
            cast(client.CoreV1Api, core),
            arguments.pop("namespace"),
            arguments.pop("name"),
            arguments.pop("keys"),
            **arguments,
        )
    assert core.calls == []


def test_pod_namespace_reads_the_service_account_file(tmp_path: Path) -> None:
    path = tmp_path / "namespace"
    assert pod_namespace(path) is None
    path.write_text("")
    assert pod_namespace(path) is None
    path.write_text("thinkmesh\n")
    assert pod_namespace(path) == "thinkmesh"


# --- the CLI: parsing, the default namespace, what it prints and its exit codes -------------------------------


@pytest.fixture
def cli_core(core: FakeCore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeCore]:
    monkeypatch.setattr(kube_secrets, "in_cluster_core", lambda: core)
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text(NS)
    monkeypatch.setattr(kube_secrets, "SERVICE_ACCOUNT_NAMESPACE", namespace_file)
    yield core


def test_cli_creates_then_reports_unchanged(cli_core: FakeCore, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["secrets", "ensure", "--name", NAME, "--random", "password", "--random", "tokens", "--length", "20"]
    argv += ["--label", "app.kubernetes.io/part-of=thinkmesh", "--label", "tier="]

    assert main(argv) == 0
    assert capsys.readouterr().out == f"created Secret {NS}/{NAME} with keys password, tokens\n"
    assert {len(value) for value in cli_core.values().values()} == {20}
    assert cli_core.secrets[NS, NAME]["labels"] == {"app.kubernetes.io/part-of": "thinkmesh", "tier": ""}

    assert main(argv) == 0
    assert capsys.readouterr().out == f"Secret {NS}/{NAME} unchanged: it already has every key\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", NAME], "the following arguments are required: --random"),
        (["--random", "password"], "the following arguments are required: --name"),
        (["--name", NAME, "--random", "p", "--label", "novalue"], "label 'novalue' is not KEY=VALUE"),
        (["--name", NAME, "--random", "p", "--length", "ten"], "invalid int value"),
        (["--name", NAME, "--random", "p", "--length", "4"], "length 4 is too short"),
        (["--name", "UPPER", "--random", "p"], "Secret name 'UPPER'"),
    ],
)
def test_cli_bad_arguments_exit_2(
    cli_core: FakeCore, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    try:
        code = main(["secrets", "ensure", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
    assert cli_core.calls == []


def test_cli_needs_a_namespace_outside_a_pod(
    cli_core: FakeCore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(kube_secrets, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    assert main(["secrets", "ensure", "--name", NAME, "--random", "password"]) == 2
    assert "no --namespace given and not running in a pod" in capsys.readouterr().err
    # --namespace wins over the pod's.
    assert main(["secrets", "ensure", "--namespace", "other", "--name", NAME, "--random", "password"]) == 0
    assert ("other", NAME) in cli_core.secrets


def test_cli_api_error_exits_1(cli_core: FakeCore, capsys: pytest.CaptureFixture[str]) -> None:
    cli_core.fail["get"] = [_api_exception(403, "forbidden")]
    assert main(["secrets", "ensure", "--name", NAME, "--random", "password"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("thinkmesh: Forbidden: cannot get Secret ml/thinkmesh-redis")
