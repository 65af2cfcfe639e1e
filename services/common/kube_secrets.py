"""Create a Kubernetes Secret of random values once, in-cluster, and never change a value it already holds.

The chart does not render random secrets itself: Helm's `lookup` renders a new value on every `helm template`
(which is how GitOps tools render), so a Redis password would change on each sync. A small Job runs
`thinkmesh secrets ensure` instead; the pods that mount the Secret wait (the kubelet retries) until it exists.

`ensure_secret` reads the Secret and then:
- creates it with every key when it does not exist;
- adds only the keys it lacks when it exists (a merge patch of `data`), leaving every present value as it is;
- does nothing when every key is there.
Two Jobs racing are safe: a create that meets `409 AlreadyExists` reads the winner's Secret and carries on, and the
patch carries the `resourceVersion` it was computed from, so a patch computed from a stale read is refused
(`409 Conflict`) instead of overwriting a key another writer just added; the function then reads again.

`kubernetes` is imported inside the functions: it is slow to import and only the search and trainer extras
install it, so importing this module stays cheap everywhere.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from services.common.errors import InvalidInput
from services.common.kube import KubeApiError, api_client

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api, V1Secret

# Where the kubelet mounts the pod's own namespace (next to the service account's token).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# Letters and digits only: a value can go into a redis:// URL, a header or a shell variable without quoting.
# 62 symbols give log2(62) ≈ 5.95 bits each, so the default 40 hold about 238 bits.
ALPHABET = string.ascii_letters + string.digits
DEFAULT_LENGTH = 40
# Below this a value is guessable in reach of an online attack (16 symbols ≈ 95 bits).
MIN_LENGTH = 16

# What the API server accepts (apimachinery's validation): a Secret's name is a DNS-1123 subdomain, a data key
# is made of alphanumerics, '-', '_' and '.'.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")

# A merge patch (RFC 7386) adds the keys of `data` it names and leaves the others; naming the type keeps the
# request right whatever the generated client would pick by default.
_PATCH_CONTENT_TYPE = "application/merge-patch+json"
# Every API call has a deadline: (connect, read) seconds.
_REQUEST_TIMEOUT = (10.0, 30.0)
# Reads and patches that lose a race are retried; this many conflicts in a row is not a race any more.
_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class EnsureResult:
    """What `ensure_secret` did to NAMESPACE/NAME: created it, added `added` to it, or left it unchanged."""

    namespace: str
    name: str
    action: Literal["created", "added", "unchanged"]
    keys: tuple[str, ...]  # the keys it wrote (all of them when created, none when unchanged)

    def describe(self) -> str:
        where = f"Secret {self.namespace}/{self.name}"
        if self.action == "created":
            return f"created {where} with keys {', '.join(self.keys)}"
        if self.action == "added":
            return f"added keys {', '.join(self.keys)} to {where}; existing keys unchanged"
        return f"{where} unchanged: it already has every key"


def random_value(length: int = DEFAULT_LENGTH) -> str:
    """A fresh random string of letters and digits from the `secrets` module's CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def pod_namespace(path: Path | None = None) -> str | None:
    """The namespace of the pod this runs in (from `path`, default the service account's), or None outside a pod."""
    try:
        namespace = (path or SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
    except OSError:
        return None
    return namespace or None


def validate_request(namespace: str, name: str, keys: Sequence[str], length: int, labels: Mapping[str, str]) -> None:
    """Raise `InvalidInput` naming the first argument the API server would refuse (or that makes a weak secret)."""
    if not namespace or len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise InvalidInput(f"namespace {namespace!r} is not a DNS-1123 label (lower-case alphanumerics and '-')")
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise InvalidInput(f"Secret name {name!r} is not a DNS-1123 subdomain (lower-case alphanumerics, '-', '.')")
    if not keys:
        raise InvalidInput("no key to generate: name at least one")
    for key in keys:
        if len(key) > 253 or not _SECRET_KEY.fullmatch(key) or key in {".", ".."}:
            raise InvalidInput(f"Secret key {key!r} is not valid (alphanumerics, '-', '_' and '.')")
    if length < MIN_LENGTH:
        raise InvalidInput(f"length {length} is too short for a secret (at least {MIN_LENGTH})")
    for label, value in labels.items():
        prefix, _, label_name = label.rpartition("/")
        if (
            not label_name
            or len(label_name) > 63
            or not _LABEL_NAME.fullmatch(label_name)
            or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)))
        ):
            raise InvalidInput(f"label key {label!r} is not a valid Kubernetes label name")
        if len(value) > 63 or not _LABEL_NAME.fullmatch(value):
            raise InvalidInput(f"label value {value!r} (for {label}) is not a valid Kubernetes label value")


def ensure_secret(
    core: CoreV1Api,
    namespace: str,
    name: str,
    keys: Sequence[str],
    *,
    length: int = DEFAULT_LENGTH,
    labels: Mapping[str, str] | None = None,
) -> EnsureResult:
    """Make Secret `namespace/name` hold every key in `keys`, generating values only for the keys it lacks.

    `labels` are set when the Secret is created; an existing Secret's labels are left to whoever owns it.
    Raises `InvalidInput` before any request for a bad argument, `KubeApiError` when the API refuses a call.
    """
    labels = dict(labels or {})
    wanted = tuple(dict.fromkeys(keys))  # a key named twice is generated once
    validate_request(namespace, name, wanted, length, labels)

    for _ in range(_MAX_ATTEMPTS):
        secret = _read(core, namespace, name)
        if secret is None:
            values = {key: random_value(length) for key in wanted}
            if _create(core, namespace, name, values, labels):
                return EnsureResult(namespace, name, "created", wanted)
            continue  # another writer created it first: read theirs and add what it lacks
        present = secret.data or {}
        missing = tuple(key for key in wanted if key not in present)
        if not missing:
            return EnsureResult(namespace, name, "unchanged", ())
        values = {key: random_value(length) for key in missing}
        resource_version = secret.metadata.resource_version if secret.metadata else None
        if _patch(core, namespace, name, values, resource_version):
            return EnsureResult(namespace, name, "added", missing)
        # The Secret changed since it was read: read it again rather than overwrite a key just added.
    raise KubeApiError(
        f"Secret {namespace}/{name} kept changing while keys were added ({_MAX_ATTEMPTS} conflicts in a row); "
        "is another writer rewriting it?"
    )


def in_cluster_core() -> CoreV1Api:
    """A `CoreV1Api` from the pod's service account, or from the kubeconfig when not running in a pod."""
    from kubernetes import client

    return client.CoreV1Api(api_client())


def _read(core: CoreV1Api, namespace: str, name: str) -> V1Secret | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_secret(name, namespace, _request_timeout=_REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, "get", namespace, name) from exc
    except _transport_errors() as exc:
        raise _unreachable(core, exc) from exc


def _create(core: CoreV1Api, namespace: str, name: str, values: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Create the Secret; False when another writer created it first."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    body = client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels) or None),
        type="Opaque",
        # `data` (base64), not `stringData`: what a read returns, so every API server stores exactly this.
        data=_encode(values),
    )
    try:
        core.create_namespaced_secret(namespace, body, _request_timeout=_REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise _api_error(exc, "create", namespace, name) from exc
    except _transport_errors() as exc:
        raise _unreachable(core, exc) from exc
    return True


def _patch(core: CoreV1Api, namespace: str, name: str, values: Mapping[str, str], resource_version: str | None) -> bool:
    """Add `values` to the Secret's data; False when it changed since `resource_version` was read."""
    from kubernetes.client.exceptions import ApiException

    body: dict[str, Any] = {"data": _encode(values)}
    if resource_version:
        # Optimistic concurrency: the server applies the patch only to this version of the Secret.
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        core.patch_namespaced_secret(
            name, namespace, body, _content_type=_PATCH_CONTENT_TYPE, _request_timeout=_REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status in (404, 409):
            return False  # deleted or changed since the read: start again from a fresh read
        raise _api_error(exc, "patch", namespace, name) from exc
    except _transport_errors() as exc:
        raise _unreachable(core, exc) from exc
    return True


def _encode(values: Mapping[str, str]) -> dict[str, bytes | str]:
    """A Secret's `data`: each value base64-encoded, as text (the JSON the API server expects)."""
    return {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}


def _api_error(exc: Any, verb: str, namespace: str, name: str) -> KubeApiError:
    """A message for a refused call that names the call, the API's own reason and, for 401/403, the fix."""
    status = exc.status
    detail = _status_message(exc)
    target = f"Secret {namespace}/{name}"
    if status == 403:
        return KubeApiError(
            f"Forbidden: cannot {verb} {target}: the service account needs RBAC verb '{verb}' on 'secrets' in "
            f"namespace {namespace} (a Role with get, create and patch on secrets, bound to it): {detail}"
        )
    if status == 401:
        return KubeApiError(f"Unauthorized: the API server rejected the credentials on {verb} {target}: {detail}")
    if status == 422:
        return KubeApiError(f"Invalid: the API server refused to {verb} {target} (is it immutable?): {detail}")
    return KubeApiError(f"Kubernetes API error {status} {exc.reason} on {verb} {target}: {detail}")


def _status_message(exc: Any) -> str:
    """The `message` of the Status object the API server sends with an error, else the raw body or reason."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        return str(message) if message else str(body).strip()[:500]
    return str(exc.reason)


def _transport_errors() -> tuple[type[Exception], ...]:
    """What the client raises when no HTTP answer came: urllib3's errors (after its retries) and socket errors."""
    from urllib3.exceptions import HTTPError

    return (HTTPError, OSError)


def _unreachable(core: CoreV1Api, exc: Exception) -> KubeApiError:
    host = core.api_client.configuration.host
    return KubeApiError(f"cannot reach the Kubernetes API at {host}: {exc}")
