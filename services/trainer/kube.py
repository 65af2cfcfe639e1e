"""Roll the policy and PPM Deployments to the model versions a self-evolution round just published.

The roll works like `kubectl rollout restart`: a strategic-merge patch of the pod template's annotations. Any
change to `spec.template` makes the Deployment controller start a new ReplicaSet, so pods are replaced with the
Deployment's own rolling-update strategy (surge, unavailability, readiness gates) — we never delete pods
ourselves. The version annotation records which model version the new pods were rolled for (it shows in
`kubectl describe` and on every pod); the timestamp makes the template change even when a version is re-published.

All names are checked before anything is patched, so a typo in one name fails the roll instead of leaving
the policy on round N+1 and the PPM on round N. The check and the patches are separate calls, so a Deployment
deleted in between still fails mid-way (with `NotFound`); the ones already patched stay patched.

`kubernetes` is imported inside the functions: it is a trainer-only extra and slow to import, so importing this
module stays cheap and works where the extra is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.common.errors import InvalidInput, NotFound
from services.common.kube import api_client

if TYPE_CHECKING:
    from kubernetes.client import AppsV1Api

ANNOTATION_VERSION = "thinkmesh.io/model-version"
# The key `kubectl rollout restart` writes: a manual restart and ours overwrite one timestamp instead of two.
ANNOTATION_RESTARTED = "kubectl.kubernetes.io/restartedAt"

# Strategic merge is what kubectl sends. The generated client picks JSON Patch (a list of operations) by default
# and only its REST layer swaps that for strategic merge when the body is a dict; naming the type keeps the
# request right even if that quiet rewrite changes.
_PATCH_CONTENT_TYPE = "application/strategic-merge-patch+json"


def roll_deployments(
    apps: AppsV1Api,
    namespace: str,
    deployments: Sequence[str],
    version: str,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Annotate every Deployment's pod template with `version` and a restart time; return the names patched.

    Raises `NotFound` (naming namespace/name) before patching anything if one of them does not exist.
    """
    return _roll(apps, namespace, {name: version for name in deployments}, now)


@dataclass(frozen=True)
class Rollout:
    """Where the trainer's two serving Deployments live."""

    namespace: str
    policy_deployment: str
    ppm_deployment: str

    def roll(self, apps: AppsV1Api, policy_version: str, ppm_version: str, *, now: datetime | None = None) -> list[str]:
        """Roll policy to `policy_version` and PPM to `ppm_version`, both or neither (see the module doc)."""
        if self.policy_deployment == self.ppm_deployment:
            # One Deployment cannot carry two versions; the second patch would silently win.
            raise InvalidInput(f"policy and PPM share the Deployment {self.namespace}/{self.policy_deployment}")
        return _roll(
            apps, self.namespace, {self.policy_deployment: policy_version, self.ppm_deployment: ppm_version}, now
        )


def in_cluster_apps() -> AppsV1Api:
    """An `AppsV1Api` from the pod's service account, or from the kubeconfig when not running in a pod."""
    from kubernetes import client

    return client.AppsV1Api(api_client())


def _roll(apps: AppsV1Api, namespace: str, versions: Mapping[str, str], now: datetime | None) -> list[str]:
    from kubernetes.client.exceptions import ApiException

    for name, version in versions.items():
        if not version.strip():
            raise InvalidInput(f"empty model version for Deployment {namespace}/{name}")
    restarted_at = _timestamp(now or datetime.now(UTC))

    # Check every name first: a missing one must fail the roll before any pod is replaced.
    for name in versions:
        try:
            apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"Deployment {namespace}/{name} not found; nothing was rolled") from exc
            raise

    patched: list[str] = []
    for name, version in versions.items():
        annotations = {ANNOTATION_VERSION: version, ANNOTATION_RESTARTED: restarted_at}
        body = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
        try:
            apps.patch_namespaced_deployment(name, namespace, body, _content_type=_PATCH_CONTENT_TYPE)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(
                    f"Deployment {namespace}/{name} disappeared during the roll; already rolled: {patched}"
                ) from exc
            raise
        patched.append(name)
    return patched


def _timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second: the format kubectl writes into the same annotation."""
    if now.tzinfo is None:
        # A naive time is ambiguous; guessing local time would write a wrong instant.
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
