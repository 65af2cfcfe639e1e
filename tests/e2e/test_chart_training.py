"""The chart's side of training stages as Kubernetes Jobs (training.mode job), asserted on `helm template`.

In job mode the trainer coordinates from the CPU pool and starts one Job per SFT or PPM stage from a template the
chart renders (a ConfigMap it mounts), with a Role for exactly that and a NetworkPolicy that lets a stage's pods
reach each other and nothing else; in local mode (the default) none of it exists and the trainer keeps its GPU.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from e2e.helmchart import (
    CHART,
    HELM,
    HELM3,
    NAMESPACE,
    RELEASE,
    TRAINING_JOB_CONFIGMAP,
    Rendered,
    RenderError,
    name,
    render,
    validate,
    values_args,
)
from services.common.settings import load_settings
from services.trainer.settings import TrainerSettings
from services.trainer.training.settings import DEFAULT_JOB_TEMPLATE, TrainingSettings

JOB = ("--set", "training.mode=job")
TRAINING_ROLE = name("trainer") + "-training"
GPU_POOL = {"nvidia.com/gpu.present": "true"}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CPU_POOL = [{"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}]}]
JOB_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "get", "delete"]},
]
PYTORCHJOB_RULE = {
    "apiGroups": ["kubeflow.org"],
    "resources": ["pytorchjobs"],
    "verbs": ["create", "get", "list", "watch", "delete"],
}
# The fields each stage's Job gets from the trainer: the template leaves them out.
TRAINERS_FIELDS = ["completions", "parallelism", "completionMode", "backoffLimit", "activeDeadlineSeconds"]


def _gpu_mentions(obj: Any) -> list[str]:
    """Every key or value that is exactly nvidia.com/gpu (a GPU resource, the GPU taint's toleration)."""
    if isinstance(obj, dict):
        return [k for k in obj if k == "nvidia.com/gpu"] + [m for v in obj.values() for m in _gpu_mentions(v)]
    if isinstance(obj, list):
        return [m for v in obj for m in _gpu_mentions(v)]
    return [obj] if obj == "nvidia.com/gpu" else []


def _job(*settings: str) -> Rendered:
    return render(*JOB, *[arg for setting in settings for arg in ("--set", setting)])


def _template(r: Rendered) -> dict[str, Any]:
    job = r.training_job()
    assert job is not None, "no training Job template"
    return job


def _train_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


# --- the trainer in job mode --------------------------------------------------------------------------------


def test_in_job_mode_the_trainer_asks_for_no_gpu_and_stays_off_the_gpu_pool() -> None:
    r = _job()
    trainer = r.workload("trainer")
    assert not _gpu_mentions(trainer)
    pod = trainer["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod and "runtimeClassName" not in pod
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == (
        CPU_POOL
    )
    assert "/dev/shm" not in {m["mountPath"] for m in r.container("trainer")["volumeMounts"]}
    # trainer.jobMode's keys replace the trainer's own whole: an operator's own placement is taken as given.
    pinned = render(*JOB, "--set-json", 'trainer.jobMode.nodeSelector={"pool":"control"}')
    assert pinned.pod("trainer")["spec"]["nodeSelector"] == {"pool": "control"}


def test_in_job_mode_the_trainer_mounts_the_template_and_is_told_the_jobs_shape() -> None:
    r = _job(
        "training.job.nodes=2",
        "training.job.gpusPerNode=8",
        "training.job.kind=pytorchjob",
        "training.job.backoffLimit=5",
        "training.job.timeoutSeconds=1209600",
        "training.job.rendezvousPort=29400",
        "training.strategy.fsdp=on",
        "training.strategy.gradientCheckpointing=off",
        "training.strategy.attention=sdpa",
        "training.strategy.microBatchSize=2",
        "training.strategy.checkpointSteps=100",
    )
    mount = {m["name"]: m for m in r.container("trainer")["volumeMounts"]}["training-job"]
    assert mount == {"name": "training-job", "mountPath": "/etc/thinkmesh/training", "readOnly": True}
    volume = {v["name"]: v for v in r.pod("trainer")["spec"]["volumes"]}["training-job"]
    assert volume["configMap"]["name"] == TRAINING_JOB_CONFIGMAP
    assert r.get("ConfigMap", TRAINING_JOB_CONFIGMAP)["data"].keys() == {"job.yaml"}
    settings = r.settings("trainer")
    assert {k: v for k, v in settings.items() if "_TRAINING_" in k or "_JOB_" in k} == {
        "THINKMESH_TRAINER_TRAINING_MODE": "job",
        "THINKMESH_TRAINER_TRAINING_NPROC_PER_NODE": "1",
        "THINKMESH_TRAINER_TRAINING_FSDP": "on",
        "THINKMESH_TRAINER_TRAINING_GRADIENT_CHECKPOINTING": "off",
        "THINKMESH_TRAINER_TRAINING_ATTENTION": "sdpa",
        "THINKMESH_TRAINER_TRAINING_MICRO_BATCH_SIZE": "2",
        "THINKMESH_TRAINER_TRAINING_CHECKPOINT_STEPS": "100",
        "THINKMESH_TRAINER_JOB_KIND": "pytorchjob",
        "THINKMESH_TRAINER_JOB_NAMESPACE": NAMESPACE,
        "THINKMESH_TRAINER_JOB_NODES": "2",
        "THINKMESH_TRAINER_JOB_GPUS_PER_NODE": "8",
        "THINKMESH_TRAINER_JOB_BACKOFF_LIMIT": "5",
        "THINKMESH_TRAINER_JOB_TIMEOUT_S": "1209600",
        "THINKMESH_TRAINER_JOB_RENDEZVOUS_PORT": "29400",
        "THINKMESH_TRAINER_JOB_TEMPLATE": "/etc/thinkmesh/training/job.yaml",
    }
    # The trainer reads them as its settings class says (the Deployment adds the broker's URLs from a Secret).
    environ = {**settings, "THINKMESH_TRAINER_BROKER_URL": "redis://redis:6379/0"}
    training = load_settings(TrainerSettings, environ=environ).training
    assert training == TrainingSettings(
        training_mode="job",
        training_fsdp="on",
        training_gradient_checkpointing="off",
        training_attention="sdpa",
        training_micro_batch_size=2,
        training_checkpoint_steps=100,
        job_kind="pytorchjob",
        job_template=DEFAULT_JOB_TEMPLATE,
        job_namespace=NAMESPACE,
        job_nodes=2,
        job_gpus_per_node=8,
        job_backoff_limit=5,
        job_timeout_s=1209600.0,
        job_rendezvous_port=29400,
        training_group_by_length=TrainingSettings().training_group_by_length,
    )


def test_the_chart_sets_the_training_settings_from_training_only() -> None:
    """trainer.config cannot set what the Jobs' template, Role and NetworkPolicy were rendered from."""
    with pytest.raises(RenderError) as caught:
        render("--set", "trainer.config.training_mode=job")
    assert "trainer.config.training_mode: the chart sets it from training.mode" in str(caught.value)
    with pytest.raises(RenderError) as caught:
        render(*JOB, "--set", "trainer.config.job_gpus_per_node=4")
    assert "training.job.gpusPerNode" in str(caught.value)


# --- the Job template ---------------------------------------------------------------------------------------


def test_the_job_template_is_a_valid_hardened_job_of_one_train_container() -> None:
    r = _job("training.job.gpusPerNode=4", "training.job.priorityClassName=training")
    job = _template(r)
    validate([job])
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    # The release's prefix of the stages' Job names.
    assert job["metadata"]["namespace"] == NAMESPACE and job["metadata"]["name"] == f"{RELEASE}-training"
    assert not set(TRAINERS_FIELDS) & set(job["spec"])
    pod = job["spec"]["template"]["spec"]
    assert "subdomain" not in pod
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "training"
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["priorityClassName"] == "training"
    # The trainer's identity on the store: the stages write files it publishes.
    trainer_pod = r.pod("trainer")["spec"]
    assert pod["securityContext"] == trainer_pod["securityContext"]
    assert pod["securityContext"]["runAsUser"] == 10005
    # The GPU pool, as the trainer's own GPUs in local mode.
    assert pod["nodeSelector"] == GPU_POOL and GPU_TAINT in pod["tolerations"]

    container = _train_container(job)
    assert container["name"] == "train"
    assert container["image"] == r.container("trainer")["image"]
    assert "command" not in container and "args" not in container  # the trainer's to set
    assert container["securityContext"] == r.container("trainer")["securityContext"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["nvidia.com/gpu"] == 4, kind
    assert container["resources"]["requests"]["memory"] == "32Gi"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "HOME": "/tmp",
        "THINKMESH_STORE": "/var/lib/thinkmesh/store",
        "THINKMESH_TRAINER_LOG_FORMAT": "json",
        "THINKMESH_TRAINER_LOG_LEVEL": "INFO",
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/lib/thinkmesh/store"]]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-store"
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "50Gi"}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}


def test_the_gpus_of_a_training_pod_come_from_gpus_per_node_only() -> None:
    with pytest.raises(RenderError) as caught:
        render(*JOB, "--set", "training.job.resources.limits.nvidia\\.com/gpu=2")
    assert "leave nvidia.com/gpu out, training.job.gpusPerNode sets it" in str(caught.value)


def test_the_job_template_follows_the_values_of_the_store_and_the_pool() -> None:
    r = render(
        *JOB,
        "--set",
        "store.existingClaim=models",
        "--set",
        "store.mountPath=/models",
        "--set",
        "training.job.shmSizeLimit=",
        "--set",
        "training.job.runtimeClassName=nvidia",
        "--set-json",
        'training.job.podAnnotations={"example.com/gang":"stage"}',
    )
    job = _template(r)
    pod = job["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert job["spec"]["template"]["metadata"]["annotations"] == {"example.com/gang": "stage"}
    container = _train_container(job)
    assert {e["name"]: e["value"] for e in container["env"]}["THINKMESH_STORE"] == "/models"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/models" in mounts and "/dev/shm" not in mounts
    (store,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert store["persistentVolumeClaim"]["claimName"] == "models"
    validate([job])


# --- the trainer's Kubernetes API ---------------------------------------------------------------------------


def _rules(r: Rendered, role: str) -> list[dict[str, Any]]:
    return r.get("Role", role)["rules"]


@pytest.mark.parametrize("kind", ["indexed", "pytorchjob"])
def test_the_trainers_training_role_allows_exactly_running_its_jobs(kind: str) -> None:
    r = _job(f"training.job.kind={kind}")
    expected = JOB_RULES + ([PYTORCHJOB_RULE] if kind == "pytorchjob" else [])
    assert _rules(r, TRAINING_ROLE) == expected
    binding = r.get("RoleBinding", TRAINING_ROLE)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TRAINING_ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name("trainer"), "namespace": NAMESPACE}]
    # The rollout's Role is unchanged beside it.
    assert [rule["verbs"] for rule in _rules(r, name("trainer") + "-rollout")] == [["get", "patch"]]


def test_either_api_use_gives_the_trainer_its_own_account_and_api_egress() -> None:
    def api_egress(r: Rendered) -> bool:
        egress = r.get("NetworkPolicy", name("trainer"))["spec"]["egress"]
        return any({p["port"] for p in rule.get("ports", [])} == {443, 6443} for rule in egress)

    no_rollout = ("--set", "trainer.rollout.enabled=false")
    jobs_only = render(*JOB, *no_rollout)
    assert {role for role in jobs_only.names("Role") if role.startswith(name("trainer"))} == {TRAINING_ROLE}
    assert jobs_only.get("ServiceAccount", name("trainer"))["automountServiceAccountToken"] is True
    pod = jobs_only.pod("trainer")["spec"]
    assert pod["serviceAccountName"] == name("trainer") and pod["automountServiceAccountToken"] is True
    assert api_egress(jobs_only)

    neither = render(*no_rollout)
    assert neither.find("ServiceAccount", name("trainer")) is None
    assert not [role for role in neither.names("Role") if role.startswith(name("trainer"))]
    pod = neither.pod("trainer")["spec"]
    assert pod["serviceAccountName"] == RELEASE and pod["automountServiceAccountToken"] is False
    assert not api_egress(neither)


# --- the training pods' network -----------------------------------------------------------------------------


def test_training_pods_reach_each_other_and_dns_only() -> None:
    r = _job()
    job = _template(r)
    labels = job["spec"]["template"]["metadata"]["labels"]
    spec = r.get("NetworkPolicy", name("training"))["spec"]
    selector = spec["podSelector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "training" and selector.items() <= labels.items()
    # The default deny covers them too.
    deny = r.get("NetworkPolicy", f"{RELEASE}-default-deny")["spec"]["podSelector"]["matchLabels"]
    assert deny.items() <= labels.items()
    peers = [{"podSelector": {"matchLabels": selector}}]
    # Any port among themselves: torchrun's rendezvous, then the ports NCCL and gloo pick.
    assert spec["ingress"] == [{"from": peers}]
    dns, *others = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert others == [{"to": peers}]
    # No other component admits them: they call no service.
    for policy in r.of_kind("NetworkPolicy"):
        if policy["metadata"]["name"] != name("training"):
            assert "component: training" not in str(policy) and "'training'" not in str(policy)


def test_training_pods_get_extra_egress_only_when_asked() -> None:
    r = render(*JOB, "--set-json", 'networkPolicy.extraEgress.training=[{"ports":[{"port":443}]}]')
    assert {"ports": [{"port": 443}]} in r.get("NetworkPolicy", name("training"))["spec"]["egress"]


# --- local mode and the rest ---------------------------------------------------------------------------------


def test_local_mode_renders_none_of_it_and_the_trainer_keeps_its_gpu(defaults: Rendered) -> None:
    assert defaults.training_job() is None
    assert defaults.find("NetworkPolicy", name("training")) is None
    assert defaults.find("Role", TRAINING_ROLE) is None
    resources = defaults.container("trainer")["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == 1 and resources["limits"]["nvidia.com/gpu"] == 1
    pod = defaults.pod("trainer")["spec"]
    assert pod["nodeSelector"] == GPU_POOL and GPU_TAINT in pod["tolerations"]
    assert "training-job" not in {v["name"] for v in pod["volumes"]}
    settings = defaults.settings("trainer")
    assert settings["THINKMESH_TRAINER_TRAINING_MODE"] == "local"
    assert settings["THINKMESH_TRAINER_TRAINING_NPROC_PER_NODE"] == "1"
    assert not [k for k in settings if k.startswith("THINKMESH_TRAINER_JOB_")]


def test_without_a_trainer_no_training_objects_render() -> None:
    r = render(*JOB, "--set", "trainer.enabled=false")
    leftover = [
        (o["kind"], o["metadata"]["name"])
        for o in r.objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component") in ("trainer", "training")
    ]
    assert not leftover


@pytest.mark.parametrize(
    "settings",
    [
        ["training.mode=job"],
        ["training.mode=job", "training.job.kind=pytorchjob"],
        ["training.mode=job", "tls.enabled=true", "tls.existingSecret=thinkmesh-tls"],
        ["training.mode=job", "networkPolicy.enabled=false"],
        ["training.mode=job", "serviceAccount.create=false", "serviceAccount.name=thinkmesh-runner"],
    ],
)
def test_job_mode_variants_render_valid_objects_with_helm_3_and_4(settings: list[str]) -> None:
    args = [arg for setting in settings for arg in ("--set", setting)]
    r = render(*args)
    validate(r.objects)
    job = _template(r)
    validate([job])
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == r.pod("search")["spec"]["serviceAccountName"]

    def inventory(rendered: Rendered) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in rendered.objects)

    assert inventory(render(*args, helm=HELM3)) == inventory(r)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("training.mode=cluster", "mode"),
        ("training.job.kind=mpijob", "kind"),
        ("training.job.nodes=0", "minimum"),
        ("training.job.rendezvousPort=70000", "maximum"),
        ("training.strategy.fsdp=maybe", "fsdp"),
        ("training.strategy.attention=flash", "attention"),
        ("training.job.gpus=8", "gpus"),
        ("trainer.jobMode.replicas=2", "replicas"),
    ],
)
def test_the_values_schema_rejects_bad_training_values(setting: str, message: str) -> None:
    with pytest.raises(RenderError) as caught:
        render("--set", setting)
    assert "schema" in str(caught.value) and message in str(caught.value)


def test_notes_show_where_the_training_jobs_are_in_job_mode_only() -> None:
    def notes(*args: str) -> str:
        command = [str(HELM), "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split("NOTES:", 1)[1]

    follow = f"get jobs,pods -l app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=training"
    assert follow in notes(*JOB)
    assert follow not in notes()


def test_gpu_production_trains_a_7b_model_on_one_8_gpu_node() -> None:
    r = render(*values_args("gpu-production"))
    job = _template(r)
    validate([job])
    container = _train_container(job)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    settings = r.settings("trainer")
    assert settings["THINKMESH_TRAINER_TRAINING_MODE"] == "job"
    assert (settings["THINKMESH_TRAINER_JOB_NODES"], settings["THINKMESH_TRAINER_JOB_GPUS_PER_NODE"]) == ("1", "8")
    # One GPU for the evaluate stage, which loads the 7B candidates in the trainer's pod; the 8 training GPUs are
    # the Jobs'.
    trainer = r.container("trainer")["resources"]
    assert trainer["requests"]["nvidia.com/gpu"] == trainer["limits"]["nvidia.com/gpu"] == 1
