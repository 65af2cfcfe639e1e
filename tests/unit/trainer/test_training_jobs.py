"""Rendering a training stage's Kubernetes objects from the chart's Job template (no API server involved).

Every native object is validated against the Kubernetes schemas, strictly, as the chart's tests validate the
chart; the PyTorchJob (a CRD) has its pod templates validated as PodTemplates and its own fields asserted.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import kubernetes_validate
import pytest
from e2e.helmchart import HELM, KUBE_VERSION, NAMESPACE, render

from services.common.errors import InvalidInput
from services.trainer.training.jobs import (
    COMPLETION_INDEX_FIELD,
    MAX_JOB_NAME,
    RUN_LABEL,
    STAGE_LABEL,
    WORKER_MODULE,
    job_name,
    load_template,
    render_manifests,
)
from services.trainer.training.settings import TrainingSettings
from support.job_runner import job_template

SPEC_PATH = "/var/lib/thinkmesh/training/r3-sft/spec.json"
SETTINGS = TrainingSettings(
    training_mode="job",
    job_namespace="ml",
    job_nodes=4,
    job_gpus_per_node=8,
    job_backoff_limit=2,
    job_timeout_s=36000.5,
    job_rendezvous_port=29400,
)
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _validate(obj: dict[str, Any]) -> None:
    """Strictly (unknown fields fail), for the Kubernetes version the chart is validated for; e2e.helmchart caches
    the parsed schemas."""
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in container["env"]}


def test_indexed_job_and_its_headless_service() -> None:
    template = job_template()
    original = copy.deepcopy(template)

    service, job = render_manifests(template, SPEC_PATH, "r3-sft", SETTINGS)

    assert template == original  # rendered from a copy
    _validate(service)
    _validate(job)
    name = "thinkmesh-train-r3-sft"
    assert job["metadata"]["name"] == service["metadata"]["name"] == name
    assert job["metadata"]["namespace"] == service["metadata"]["namespace"] == "ml"
    labels = {RUN_LABEL: name, STAGE_LABEL: "r3-sft"}
    assert job["metadata"]["labels"] == {**template["metadata"]["labels"], **labels}
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"], spec["completionMode"]) == (4, 4, "Indexed")
    # The Job retries nothing: a pod replacing a failed one cannot join the running torchrun group, so the launcher
    # restarts the whole stage instead (job_backoff_limit, 2 here, is its count of restarts, not the Job's).
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 36001)
    assert "podFailurePolicy" not in spec and "backoffLimitPerIndex" not in spec
    assert spec["ttlSecondsAfterFinished"] > 0  # a safety net only: the launcher deletes the Job itself
    pod = spec["template"]
    assert pod["metadata"]["labels"] == {**template["spec"]["template"]["metadata"]["labels"], **labels}
    assert pod["metadata"]["annotations"] == template["spec"]["template"]["metadata"]["annotations"]
    # The rendezvous: the index-0 pod's name under the Service, which selects exactly this run's pods.
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {RUN_LABEL: name}
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"] == [{"name": "rendezvous", "port": 29400, "targetPort": 29400, "protocol": "TCP"}]
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-m", "torch.distributed.run"]
    assert container["args"] == ["-m", WORKER_MODULE, SPEC_PATH]
    assert _env(container) == {
        "THINKMESH_STORE": "/var/lib/thinkmesh",  # the template's variables stay
        "HF_HOME": "/tmp/hf",
        "PET_NNODES": "4",
        "PET_NPROC_PER_NODE": "8",
        "PET_NODE_RANK": {"fieldRef": {"fieldPath": COMPLETION_INDEX_FIELD}},
        "PET_MASTER_ADDR": f"{name}-0.{name}",
        "PET_MASTER_PORT": "29400",
    }
    assert container["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "8"},
        "limits": {"memory": "64Gi", "nvidia.com/gpu": "8"},
    }
    assert container["ports"] == [{"name": "rendezvous", "containerPort": 29400, "protocol": "TCP"}]
    # Everything else is the chart's, untouched.
    for key in ("securityContext", "nodeSelector", "tolerations", "volumes", "serviceAccountName"):
        assert pod["spec"][key] == template["spec"]["template"]["spec"][key]
    original_container = template["spec"]["template"]["spec"]["containers"][0]
    for key in ("image", "volumeMounts", "securityContext"):
        assert container[key] == original_container[key]


def test_the_templates_own_rank_variables_and_port_are_replaced_not_doubled() -> None:
    template = job_template()
    container = template["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "PET_NNODES", "value": "99"})
    container["ports"] = [{"name": "rendezvous", "containerPort": 1234, "protocol": "TCP"}]

    _, job = render_manifests(template, SPEC_PATH, "r3-sft", SETTINGS)

    (rendered,) = job["spec"]["template"]["spec"]["containers"]
    assert [v["name"] for v in rendered["env"]].count("PET_NNODES") == 1
    assert _env(rendered)["PET_NNODES"] == "4"
    assert rendered["ports"] == [{"name": "rendezvous", "containerPort": 29400, "protocol": "TCP"}]


def test_pytorchjob_master_and_workers() -> None:
    settings = TrainingSettings(**{**SETTINGS.__dict__, "job_kind": "pytorchjob"})
    template = job_template()

    (job,) = render_manifests(template, SPEC_PATH, "r3-ppm", settings)

    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    name = "thinkmesh-train-r3-ppm"
    assert job["metadata"]["name"] == name and job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["labels"][RUN_LABEL] == name
    spec = job["spec"]
    assert spec["nprocPerNode"] == "8"
    assert spec["runPolicy"] == {
        "backoffLimit": 0,  # as for an Indexed Job: the launcher restarts the stage as a whole
        "activeDeadlineSeconds": 36001,
        "ttlSecondsAfterFinished": spec["runPolicy"]["ttlSecondsAfterFinished"],
        "cleanPodPolicy": "Running",
    }
    replicas = spec["pytorchReplicaSpecs"]
    assert {kind: r["replicas"] for kind, r in replicas.items()} == {"Master": 1, "Worker": 3}
    for replica in replicas.values():
        assert replica["restartPolicy"] == "Never"  # a failed pod fails the PyTorchJob, not restarted in place
        pod = replica["template"]
        _validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": pod})
        assert pod["metadata"]["labels"][RUN_LABEL] == name
        assert "restartPolicy" not in pod["spec"] and "subdomain" not in pod["spec"]
        (container,) = pod["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator's required name
        assert container["command"] == ["python", "-m", "torch.distributed.run"]
        assert container["args"] == ["-m", WORKER_MODULE, SPEC_PATH]
        assert not [v for v in _env(container) if v.startswith("PET_")]  # the operator sets those
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert {"name": "pytorchjob-port", "containerPort": 29400, "protocol": "TCP"} in container["ports"]

    one_node = TrainingSettings(**{**settings.__dict__, "job_nodes": 1})
    (single,) = render_manifests(template, SPEC_PATH, "r3-ppm", one_node)
    assert list(single["spec"]["pytorchReplicaSpecs"]) == ["Master"]


@pytest.mark.parametrize(
    "name",
    ["r3-sft", "R3_SFT", "round 12 / ppm", "x" * 80, "3-sft", "r3-sft-" + "a" * 60],
)
def test_job_names_are_dns_labels_short_enough_for_pod_hostnames(name: str) -> None:
    job = job_name(job_template(), name)

    assert DNS_LABEL.fullmatch(job), job
    assert len(job) <= MAX_JOB_NAME
    assert len(f"{job}-{9_999_999}") <= 63  # the pod hostname of a large index
    assert job_name(job_template(), name) == job  # a restarted trainer finds the same Job


def test_changed_names_carry_a_hash_so_they_never_collide() -> None:
    long_a, long_b = "r3-sft-" + "a" * 60 + "-1", "r3-sft-" + "a" * 60 + "-2"
    assert job_name(job_template(), long_a) != job_name(job_template(), long_b)
    assert job_name(job_template(), "r3_sft") != job_name(job_template(), "r3.sft")
    assert job_name(job_template(), "r3-sft") == "thinkmesh-train-r3-sft"  # a clean name is kept as it is
    # The template's name is the prefix (the chart may name it after its release); without one, the default.
    named = job_template(name="prod-train")
    assert job_name(named, "r3-sft") == "prod-train-r3-sft"
    del named["metadata"]["name"]
    assert job_name(named, "r3-sft") == "thinkmesh-train-r3-sft"


def test_the_namespace_comes_from_the_settings_else_the_template() -> None:
    no_namespace = TrainingSettings(**{**SETTINGS.__dict__, "job_namespace": ""})
    service, job = render_manifests(job_template(namespace="from-chart"), SPEC_PATH, "r3-sft", no_namespace)
    assert service["metadata"]["namespace"] == job["metadata"]["namespace"] == "from-chart"

    template = job_template()
    del template["metadata"]["namespace"]
    with pytest.raises(InvalidInput, match="namespace"):
        render_manifests(template, SPEC_PATH, "r3-sft", no_namespace)


def _without_train(template: dict[str, Any]) -> None:
    template["spec"]["template"]["spec"]["containers"][0]["name"] = "trainer"


def _two_trains(template: dict[str, Any]) -> None:
    containers = template["spec"]["template"]["spec"]["containers"]
    containers.append(copy.deepcopy(containers[0]))


def _no_pod_template(template: dict[str, Any]) -> None:
    del template["spec"]["template"]


def _a_deployment(template: dict[str, Any]) -> None:
    template["kind"] = "Deployment"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_without_train, r"exactly one container named 'train'; has \['trainer'\]"),
        (_two_trains, r"exactly one container named 'train'; has \['train', 'train'\]"),
        (_no_pod_template, "no pod template"),
        (_a_deployment, "must be a batch/v1 Job, not a 'Deployment'"),
    ],
)
@pytest.mark.parametrize("kind", ["indexed", "pytorchjob"])
def test_a_bad_template_is_refused_by_name(change: Any, message: str, kind: str) -> None:
    template = job_template()
    change(template)
    settings = TrainingSettings(**{**SETTINGS.__dict__, "job_kind": kind})
    with pytest.raises(InvalidInput, match=message):
        render_manifests(template, SPEC_PATH, "r3-sft", settings)


def test_a_sidecar_beside_train_is_kept() -> None:
    template = job_template()
    sidecar = {"name": "metrics", "image": "ghcr.io/thinkmesh/metrics:0.1.0"}
    template["spec"]["template"]["spec"]["containers"].append(sidecar)

    _, job = render_manifests(template, SPEC_PATH, "r3-sft", SETTINGS)

    _validate(job)
    assert job["spec"]["template"]["spec"]["containers"][1] == sidecar


def test_load_template(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("apiVersion: batch/v1\nkind: Job\nspec: {}\n")
    assert load_template(path) == {"apiVersion": "batch/v1", "kind": "Job", "spec": {}}
    with pytest.raises(InvalidInput, match="cannot read the training Job template"):
        load_template(tmp_path / "missing.yaml")
    path.write_text("- a list\n")
    with pytest.raises(InvalidInput, match="not a YAML mapping"):
        load_template(path)
    path.write_text("kind: [unclosed\n")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_template(path)


@pytest.mark.parametrize("kind", ["indexed", "pytorchjob"])
def test_the_charts_own_template_renders_valid_objects(kind: Literal["indexed", "pytorchjob"]) -> None:
    """The contract with the chart: its rendered template (`helm template`, training.mode job) completes into
    objects the API server accepts."""
    if not HELM.exists():
        pytest.skip("no pinned helm at .tools/helm (scripts/install_helm.sh)")
    template = render("--set", "training.mode=job", "--set", f"training.job.kind={kind}").training_job()
    assert template is not None
    settings = TrainingSettings(training_mode="job", job_kind=kind, job_namespace=NAMESPACE, job_nodes=2)

    manifests = render_manifests(template, SPEC_PATH, "r3-sft", settings)

    if kind == "indexed":
        for obj in manifests:
            _validate(obj)
        (container,) = manifests[1]["spec"]["template"]["spec"]["containers"]
        assert [p["name"] for p in container["ports"]] == ["rendezvous"]
    else:
        for replica in manifests[0]["spec"]["pytorchReplicaSpecs"].values():
            _validate(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": replica["template"]}
            )
