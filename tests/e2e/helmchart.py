"""Render the Helm chart and look things up in the result (helm: scripts/install_helm.sh, pinned, in .tools/)."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "thinkmesh"
VALUES = REPO / "deploy" / "helm" / "values"
HELM = REPO / ".tools" / "helm"
HELM3 = REPO / ".tools" / "helm3"
RELEASE = "thinkmesh"
NAMESPACE = "thinkmesh"
KUBE_VERSION = "1.35.0"

# The values sets CI renders: the chart's defaults and each file in deploy/helm/values/.
VALUE_SETS = ["defaults", *sorted(p.stem for p in VALUES.glob("*.yaml"))]
COMPONENTS = ["policy", "ppm", "sandbox", "search", "worker", "trainer", "redis"]
GRPC_SERVICES = ["policy", "ppm", "sandbox", "search", "trainer"]
GPU_COMPONENTS = ["policy", "ppm", "trainer"]
CPU_COMPONENTS = ["sandbox", "search", "worker", "redis"]


class RenderError(Exception):
    """helm template failed; the message is helm's stderr."""


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        for o in self.objects:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                return o
        return None

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = self.find(kind, name)
        assert found is not None, f"no {kind} {name}; have {sorted(self.names(kind))}"
        return found

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}

    def workloads(self) -> Iterator[dict[str, Any]]:
        yield from (o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet"))

    def pod_owners(self) -> Iterator[dict[str, Any]]:
        """Every object with a pod template: the workloads, the Jobs (seed, secrets) and DaemonSets."""
        yield from (o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"))

    def job(self, component: str) -> dict[str, Any]:
        """The one Job of a component ("seed", "secrets"); its name ends in a hash of its settings."""
        (job,) = [o for o in self.of_kind("Job") if o["metadata"]["labels"]["app.kubernetes.io/component"] == component]
        return job

    def workload(self, component: str) -> dict[str, Any]:
        kind = "StatefulSet" if component == "redis" else "Deployment"
        return self.get(kind, name(component))

    def pod(self, component: str) -> dict[str, Any]:
        return self.workload(component)["spec"]["template"]

    def container(self, component: str) -> dict[str, Any]:
        (container,) = self.pod(component)["spec"]["containers"]
        return container

    def training_job(self) -> dict[str, Any] | None:
        """The Job template the trainer starts its training stages from (training.mode job), parsed from its
        ConfigMap; None when the stages train in the trainer's pod."""
        found = self.find("ConfigMap", TRAINING_JOB_CONFIGMAP)
        return yaml.safe_load(found["data"]["job.yaml"]) if found else None

    def settings(self, component: str) -> dict[str, str]:
        """The THINKMESH_* settings of a component: its ConfigMap's data."""
        return self.get("ConfigMap", name(component))["data"]


def name(component: str) -> str:
    return f"{RELEASE}-{component}"


TRAINING_JOB_CONFIGMAP = f"{name('trainer')}-training-job"


# Kinds whose schemas are not part of Kubernetes' API; the tests assert their content instead.
CRD_KINDS = {("cert-manager.io/v1", "Certificate")}

# kubernetes-validate parses its (large) schema files again for every object; parse each once per session.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


def validate(objects: list[dict[str, Any]]) -> None:
    """Every object against the Kubernetes schemas, strictly (unknown fields fail); CRDs are skipped."""
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "defaults" else ["-f", str(VALUES / f"{value_set}.yaml")]


@functools.lru_cache(maxsize=64)
def _template(helm: str, args: tuple[str, ...]) -> str:
    proc = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr)
    return proc.stdout


def render_text(*args: str, helm: Path = HELM) -> str:
    return _template(str(helm), tuple(args))


def render(*args: str, helm: Path = HELM) -> Rendered:
    """`helm template` with these arguments (e.g. "-f", file, "--set", "a.b=c"), parsed."""
    return Rendered([doc for doc in yaml.safe_load_all(render_text(*args, helm=helm)) if doc])
