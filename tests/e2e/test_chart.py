"""The rendered Helm chart: what operators rely on, asserted on the objects `helm template` produces.

Every values set CI ships (defaults, CPU-only trial, production GPU, external Redis) is rendered with the pinned
Helm 4 and checked against the Kubernetes 1.35 schemas; the rest asserts the chart's promises one by one.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml

from e2e import helmchart
from e2e.helmchart import (
    CHART,
    GPU_COMPONENTS,
    GRPC_SERVICES,
    HELM,
    HELM3,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Rendered,
    RenderError,
    name,
    render,
    render_text,
    values_args,
)
from services.common.server import LIVENESS

# The worker runs as pools, one per queue (worker.pools): each pool's objects (Deployment, ConfigMap, PDB,
# NetworkPolicy, Service, HPA or ScaledObject, certificate) are those of a component "worker-<pool>". The tests name the
# pools where the worker's objects are meant; WORKER where one pool stands for both (they differ only by queue).
POOLS = ["worker-solve", "worker-round"]
WORKER = POOLS[0]
QUEUE = {"worker-solve": "solve", "worker-round": "round"}
# Components by their objects' names and labels (the values keep one `worker` block: helmchart.COMPONENTS).
COMPONENTS = [c for x in helmchart.COMPONENTS for c in (POOLS if x == "worker" else [x])]
CPU_COMPONENTS = [c for x in helmchart.CPU_COMPONENTS for c in (POOLS if x == "worker" else [x])]
# The vendored CRD schemas (chart/schemas/<group>-<version>-<kind>.json) scripts/helm_check.sh validates KEDA's with.
SCHEMAS = CHART / "schemas"
KEDA_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}

LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "helm.sh/chart",
]
TLS = ["--set", "tls.enabled=true", "--set", "tls.existingSecret=thinkmesh-tls"]
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
PORTS = {"sandbox": 50051, "policy": 50052, "ppm": 50053, "search": 50054, "trainer": 50055, "redis": 6379}
PREFIX = {
    "sandbox": "SANDBOX",
    "policy": "POLICY",
    "ppm": "PPM",
    "search": "SEARCH",
    "worker-solve": "SEARCH",
    "worker-round": "SEARCH",
    "trainer": "TRAINER",
}


def _vendored_schema(obj: dict[str, Any]) -> dict[str, Any]:
    group_version = obj["apiVersion"].replace("/", "-")
    return json.loads((SCHEMAS / f"{group_version}-{obj['kind'].lower()}.json").read_text())


def validate(objects: list[dict[str, Any]]) -> None:
    """helmchart.validate (Kubernetes' own kinds, strictly), and KEDA's kinds against the vendored CRD schemas."""
    helmchart.validate([o for o in objects if (o["apiVersion"], o["kind"]) not in KEDA_KINDS])
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in KEDA_KINDS:
            jsonschema.validate(obj, _vendored_schema(obj), cls=jsonschema.Draft7Validator)


def _enabled(r: Rendered) -> list[str]:
    return [c for c in COMPONENTS if r.find("StatefulSet" if c == "redis" else "Deployment", name(c))]


def _peers(peers: list[dict[str, Any]] | None) -> set[str]:
    """The components a NetworkPolicy peer list selects; other kinds of peers as 'other'."""
    found = set()
    for peer in peers or []:
        labels = peer.get("podSelector", {}).get("matchLabels", {})
        if "app.kubernetes.io/component" in labels and set(peer) == {"podSelector"}:
            assert labels["app.kubernetes.io/instance"] == RELEASE
            found.add(labels["app.kubernetes.io/component"])
        else:
            found.add("other")
    return found


def _rule_on_port(rules: list[dict[str, Any]], port: int | str) -> dict[str, Any] | None:
    matching = [r for r in rules if any(p.get("port") == port for p in r.get("ports", []))]
    assert len(matching) <= 1
    return matching[0] if matching else None


def _volume_mounts(r: Rendered, component: str) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in r.container(component).get("volumeMounts", [])}


def _volumes(r: Rendered, component: str) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in r.pod(component)["spec"].get("volumes", [])}


def _env(r: Rendered, component: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in r.container(component).get("env", [])}


# --- rendering and schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_validates_against_the_kubernetes_schemas(value_set: str) -> None:
    r = render(*values_args(value_set))
    assert r.objects, "nothing rendered"
    validate(r.objects)


VARIANTS = {
    "metrics off": ["metrics.enabled=false"],
    "network policies off": ["networkPolicy.enabled=false"],
    "auth off": ["auth.enabled=false"],
    "fixed tokens": ["auth.tokens={aaaaaaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbbbbbb}"],
    "tls from a secret": ["tls.enabled=true", "tls.existingSecret=thinkmesh-tls"],
    "tls from cert-manager": ["tls.enabled=true", "tls.certManager.enabled=true", "tls.certManager.issuerRef.name=ca"],
    "existing store": ["store.existingClaim=models"],
    "redis without persistence": ["redis.persistence.enabled=false"],
    "existing service account": ["serviceAccount.create=false", "serviceAccount.name=thinkmesh-runner"],
    "every hpa": [f"{c}.autoscaling.enabled=true" for c in ["policy", "ppm", "search", "worker"]],
    "image digests": ["sandbox.image.digest=sha256:" + "0" * 64],
    "pull secrets": ["imagePullSecrets[0].name=regcred"],
    "search load balancer": ["search.service.type=LoadBalancer"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_render_valid_objects(variant: str) -> None:
    r = render(*[arg for setting in VARIANTS[variant] for arg in ("--set", setting)])
    validate(r.objects)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm3_renders_the_same_objects_as_helm4(value_set: str) -> None:
    def inventory(r: Rendered) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in r.objects)

    args = values_args(value_set)
    assert inventory(render(*args, helm=HELM3)) == inventory(render(*args))


@pytest.mark.parametrize("component", helmchart.COMPONENTS)
def test_each_component_can_be_turned_off(component: str) -> None:
    settings = ["--set", f"{component}.enabled=false"]
    if component == "redis":
        settings += ["--set", "redis.external.url=redis://redis.example:6379/0"]
    r = render(*settings)
    left = [
        (o["kind"], o["metadata"]["name"])
        for o in r.objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component", "").split("-")[0] == component
        and not (component == "redis" and o["kind"] == "Secret")  # the external broker's URLs
    ]
    assert not left
    validate(r.objects)
    # Nobody calls it, admits it or is told where it is.
    text = render_text(*settings)
    assert f"{name(component)}." not in text and f"{name(component)}-headless" not in text
    if component != "redis":
        assert f"app.kubernetes.io/component: {component}" not in text


def test_every_object_carries_the_standard_labels(defaults: Rendered) -> None:
    for obj in defaults.objects:
        labels = obj["metadata"].get("labels", {})
        assert all(key in labels for key in LABELS), (obj["kind"], obj["metadata"]["name"], labels)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert obj["metadata"]["namespace"] == NAMESPACE
    for component in COMPONENTS:
        assert defaults.workload(component)["metadata"]["labels"]["app.kubernetes.io/component"] == component


# --- values and schema ----------------------------------------------------------------------------------------


def test_every_component_has_the_same_keys_in_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    shared = list(values["policy"])
    assert shared[:13] == [
        "enabled",
        "image",
        "replicas",
        "resources",
        "nodeSelector",
        "tolerations",
        "affinity",
        "podSecurityContext",
        "securityContext",
        "autoscaling",
        "pdb",
        "service",
        "extraEnv",
    ]
    for component in helmchart.COMPONENTS:
        assert list(values[component])[: len(shared)] == shared, component
    assert set(values["redis"]) - set(shared) == {"auth", "persistence", "external"}


def test_every_value_is_commented() -> None:
    """Each value up to three levels deep has a comment above it, or sits in a commented block."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^(\s*)([A-Za-z0-9_.\-/]+):")
    commented_parents: dict[int, bool] = {}
    missing = []
    for index, line in enumerate(lines):
        match = key.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        depth = len(match.group(1)) // 2
        commented = index > 0 and lines[index - 1].lstrip().startswith("#")
        commented_parents[depth] = commented
        in_commented_block = any(commented_parents.get(d) for d in range(1, depth))
        if depth <= 3 and not commented and not in_commented_block:
            # A block whose every child is commented counts as documented by them.
            is_block = line.rstrip().endswith(":")
            if not is_block:
                missing.append(f"{index + 1}: {line.strip()}")
    assert not missing, "values without a comment:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("sandbox.replicas=-1", "minimum"),
        ("sandbox.autoscaling.enabled=maybe", "boolean"),
        ("search.service.port=70000", "maximum"),
        ("sandbox.replica=3", "replica"),
        ("trainer.autoscaling.enabled=true", "trainer"),
        ("redis.replicas=3", "redis"),
        ("logging.format=xml", "format"),
        ("policy.image.digest=latest", "digest"),
        ("store.accessModes={ReadWriteSometimes}", "accessModes"),
    ],
)
def test_the_values_schema_rejects_bad_values(setting: str, message: str) -> None:
    with pytest.raises(RenderError) as caught:
        render("--set", setting)
    assert "schema" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["tls.enabled=true"], "tls.existingSecret (or tls.certManager.enabled) is required"),
        (["tls.enabled=true", "tls.certManager.enabled=true"], "tls.certManager.issuerRef.name is required"),
        (["redis.enabled=false"], "redis.external.url (or redis.external.existingSecret) is required"),
        (["sandbox.config.drain_seconds=40"], "must be below terminationGracePeriodSeconds"),
        (["sandbox.autoscaling.targetCPUUtilizationPercentage=0"], "sandbox.autoscaling needs"),
        (["serviceAccount.create=false"], "serviceAccount.name is required"),
    ],
)
def test_values_that_must_be_set_are_required(settings: list[str], message: str) -> None:
    args = [arg for setting in settings for arg in ("--set", setting)]
    with pytest.raises(RenderError) as caught:
        render(*args)
    assert message in str(caught.value)


# --- pods ---------------------------------------------------------------------------------------------------


SANDBOX_SECCOMP = {"type": "Localhost", "localhostProfile": "thinkmesh/sandbox.json"}
# The pods that call the Kubernetes API, each with an account and a Role of its own.
API_CALLERS = {name("trainer"), name("secrets")}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_is_hardened(value_set: str) -> None:
    r = render(*values_args(value_set))
    installer = name("seccomp")
    for owner in r.pod_owners():
        where = f"{value_set}: {owner['metadata']['name']}"
        pod = owner["spec"]["template"]["spec"]
        component = owner["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        seccomp = SANDBOX_SECCOMP if component == "sandbox" else {"type": "RuntimeDefault"}
        assert pod["securityContext"]["seccompProfile"] == seccomp, where
        # Service links would inject THINKMESH_<SVC>_PORT=tcp://… and clash with the settings' names.
        assert pod["enableServiceLinks"] is False, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        assert pod["automountServiceAccountToken"] is (pod["serviceAccountName"] in API_CALLERS), where
        if owner["metadata"]["name"] == installer:
            # The one root pod: it writes the sandbox's seccomp profile into the kubelet's directory, and nothing
            # else (one hostPath, that directory; no capability).
            (host,) = [v["hostPath"] for v in pod["volumes"] if "hostPath" in v]
            assert host == {"path": "/var/lib/kubelet/seccomp/thinkmesh", "type": "DirectoryOrCreate"}, where
            (container,) = pod["containers"]
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, where
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert not any("hostPath" in v for v in pod.get("volumes", [])), where
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == seccomp, where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # A read-only root needs a writable /tmp: the sandbox's working directories, caches elsewhere.
            assert "/tmp" in mounts, where
            tmp = {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]
            assert "sizeLimit" in tmp["emptyDir"], where


@pytest.mark.parametrize("value_set", ["defaults", "gpu-production"])
def test_gpu_components_request_gpus_on_the_gpu_pool(value_set: str) -> None:
    r = render(*values_args(value_set))
    for component in GPU_COMPONENTS:
        template = r.pod(component)
        if component == "trainer" and (job := r.training_job()):
            template = job["spec"]["template"]  # its stages train in Jobs (gpu-production): the GPUs are theirs
        pod = template["spec"]
        (container,) = pod["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1, component
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, component
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert "/dev/shm" in {m["mountPath"] for m in container["volumeMounts"]}


@pytest.mark.parametrize("value_set", ["defaults", "gpu-production"])
def test_cpu_components_stay_off_the_gpu_pool(value_set: str) -> None:
    r = render(*values_args(value_set))
    for component in CPU_COMPONENTS:
        pod = r.pod(component)["spec"]
        assert "nvidia.com/gpu" not in r.container(component)["resources"].get("limits", {}), component
        assert not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), component
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}]}]


def test_the_cpu_trial_asks_for_no_gpu_and_no_node_pool() -> None:
    r = render(*values_args("cpu-trial"))
    for workload in r.workloads():
        pod = workload["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod, workload["metadata"]["name"]
        for container in pod["containers"]:
            assert "nvidia.com/gpu" not in str(container["resources"])
    assert r.settings("policy")["THINKMESH_POLICY_BACKEND"] == "hf"


def test_the_cpu_trial_pulls_the_cpu_builds_of_the_torch_images(defaults: Rendered) -> None:
    """`make images` tags the CPU builds of policy, ppm and trainer <appVersion>-cpu; the defaults pull CUDA ones."""
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    trial = render(*values_args("cpu-trial"))
    for component in GPU_COMPONENTS:
        assert defaults.container(component)["image"].endswith(f"/thinkmesh-{component}:{app_version}")
        assert trial.container(component)["image"].endswith(f"/thinkmesh-{component}:{app_version}-cpu")
    for component in CPU_COMPONENTS[:-1]:  # redis is not ours
        assert trial.container(component)["image"] == defaults.container(component)["image"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_a_vllm_policy_pod_requests_the_gpus_its_engine_uses(value_set: str) -> None:
    """The engine's tensor x pipeline x data parallel sizes (its preset and settings, read as the pod reads them)
    are the GPUs the pod asks for: more would idle, fewer would fail the engine at start."""
    from services.common.settings import load_settings
    from services.policy.settings import PolicySettings

    r = render(*values_args(value_set))
    environment = r.settings("policy")
    if environment.get("THINKMESH_POLICY_BACKEND") != "vllm":
        pytest.skip(f"{value_set}: the policy does not run on vLLM")
    settings = load_settings(PolicySettings, environment)
    gpus = int(r.container("policy")["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
    assert gpus == settings.vllm.gpus(), f"{value_set}: {gpus} GPUs for an engine on {settings.vllm.gpus()}"


def test_gpu_production_serves_qwen_math_7b_on_vllm() -> None:
    r = render(*values_args("gpu-production"))
    settings = r.settings("policy")
    assert settings["THINKMESH_POLICY_BACKEND"] == "vllm"
    # Not pinned: the pods serve the store's current version, which the seed Job makes Qwen2.5-Math-7B.
    assert "THINKMESH_POLICY_MODEL" not in settings
    job = r.job("seed")["spec"]["template"]["spec"]
    steps = {c["name"]: c["args"] for c in job["initContainers"] + job["containers"]}
    assert steps["import-policy"][:5] == ["models", "import", "Qwen/Qwen2.5-Math-7B", "--kind", "policy"]
    assert steps["import-ppm"][:5] == ["models", "import", "Qwen/Qwen2.5-Math-7B", "--kind", "ppm"]
    # The hub download: DNS and HTTPS out of the seed pod, nothing in.
    seed_policy = r.get("NetworkPolicy", name("seed"))["spec"]
    assert seed_policy["ingress"] == [] and {"ports": [{"port": 443, "protocol": "TCP"}]} in seed_policy["egress"]
    for component in ["policy", "ppm"]:
        assert r.pod(component)["spec"]["runtimeClassName"] == "nvidia", component
    # A 7B full fine-tune: each stage a Job on one node's 8 GPUs (FSDP); the trainer keeps one GPU for evaluating
    # the 7B candidates.
    training = r.training_job()
    assert training is not None
    assert training["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert r.settings("trainer")["THINKMESH_TRAINER_JOB_GPUS_PER_NODE"] == "8"
    assert r.pod("trainer")["spec"]["runtimeClassName"] == "nvidia"


def test_services_run_the_thinkmesh_command_on_their_port(defaults: Rendered) -> None:
    for component in GRPC_SERVICES:
        container = defaults.container(component)
        port = PORTS[component]
        assert container["command"] == ["thinkmesh"]
        assert container["args"] == ["serve", component, "--host", "0.0.0.0", "--port", str(port)]
        assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in container["ports"]
    worker = defaults.container(WORKER)
    assert worker["args"] == ["worker"]
    assert defaults.settings(WORKER)["THINKMESH_SEARCH_WORKER_CONCURRENCY"] == "16"
    # Each tree's policy calls stay on one policy pod (its prefix cache), over the headless Service's addresses.
    assert defaults.settings(WORKER)["THINKMESH_SEARCH_POLICY_ROUTING"] == "affinity"
    assert defaults.settings(WORKER)["THINKMESH_SEARCH_POLICY_TARGET"].startswith("dns:///")


def test_grpc_services_have_grpc_probes_and_model_pods_a_long_startup(defaults: Rendered) -> None:
    for component in GRPC_SERVICES:
        container = defaults.container(component)
        assert container["readinessProbe"]["grpc"] == {"port": PORTS[component]}, component
        # Started once it answers; the search's readiness follows its workers' heartbeats, not its start.
        started = (
            {"port": PORTS[component], "service": LIVENESS} if component == "search" else {"port": PORTS[component]}
        )
        assert container["startupProbe"]["grpc"] == started, component
        # Alive while it answers, even unready (a model reloading, a drain): the liveness health name.
        assert container["livenessProbe"]["grpc"] == {"port": PORTS[component], "service": LIVENESS}, component
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        if component in ("policy", "ppm"):
            assert budget >= 20 * 60, f"{component}: {budget}s is too short to load a 7B model"
        else:
            assert budget <= 5 * 60, f"{component}: a {budget}s startup hides a crash loop"
    # Celery has no gRPC health: the worker serves HTTP health on a port of its own (not in any Service).
    worker = defaults.container(WORKER)
    port = defaults.settings(WORKER)["THINKMESH_SEARCH_HEALTH_PORT"]
    assert {"name": "health", "containerPort": int(port), "protocol": "TCP"} in worker["ports"]
    paths = {probe: worker[probe]["httpGet"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths == {
        "startupProbe": {"path": "/readyz", "port": "health"},
        "readinessProbe": {"path": "/readyz", "port": "health"},
        "livenessProbe": {"path": "/livez", "port": "health"},
    }
    assert "health" not in {p["name"] for p in defaults.get("Service", name(WORKER))["spec"]["ports"]}
    assert defaults.container("redis")["readinessProbe"]["exec"]["command"][0] == "sh"


def test_a_worker_probe_from_values_is_used_as_given() -> None:
    probe = {"exec": {"command": ["true"]}, "periodSeconds": 30}
    r = render("--set-json", f"worker.probes.liveness={json.dumps(probe)}")
    liveness = r.container(WORKER)["livenessProbe"]
    assert liveness["exec"] == probe["exec"] and liveness["periodSeconds"] == 30 and "httpGet" not in liveness


def test_drain_ends_before_the_kubelet_kills(defaults: Rendered) -> None:
    for component in ["policy", "ppm", "sandbox", "search", *POOLS, "trainer"]:
        pod = defaults.pod(component)["spec"]
        drain = int(defaults.settings(component)[f"THINKMESH_{PREFIX[component]}_DRAIN_SECONDS"])
        pre_stop = defaults.container(component)["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert drain > 0 and pre_stop + drain < pod["terminationGracePeriodSeconds"], component


def test_pods_carry_config_checksums_that_follow_their_config() -> None:
    base = render()
    changed = render("--set", "sandbox.config.max_queue=5")
    for component in COMPONENTS:
        checksum = base.pod(component)["metadata"]["annotations"]["checksum/config"]
        assert re.fullmatch(r"[0-9a-f]{64}", checksum), component
        after = changed.pod(component)["metadata"]["annotations"]["checksum/config"]
        assert (after != checksum) == (component == "sandbox"), component
    moved = render(*values_args("external-redis"))
    for component in ["search", *POOLS, "trainer"]:
        assert (
            moved.pod(component)["metadata"]["annotations"]["checksum/broker"]
            != base.pod(component)["metadata"]["annotations"]["checksum/broker"]
        )


def test_metrics_are_served_exposed_and_annotated(defaults: Rendered) -> None:
    for component in ["policy", "ppm", "sandbox", "search", *POOLS, "trainer"]:
        annotations = defaults.pod(component)["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "9090"
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in defaults.container(component)["ports"]
        assert defaults.settings(component)[f"THINKMESH_{PREFIX[component]}_METRICS_PORT"] == "9090"
        service = defaults.get("Service", name(component))
        assert any(p["name"] == "metrics" and p["port"] == 9090 for p in service["spec"]["ports"])


def test_sandbox_workers_follow_the_cpu_limit() -> None:
    assert render().settings("sandbox")["THINKMESH_SANDBOX_MAX_WORKERS"] == "2"
    assert (
        render("--set", "sandbox.resources.limits.cpu=3500m").settings("sandbox")["THINKMESH_SANDBOX_MAX_WORKERS"]
        == "4"
    )
    assert render("--set", "sandbox.config.max_workers=9").settings("sandbox")["THINKMESH_SANDBOX_MAX_WORKERS"] == "9"


def test_runtime_class_is_rendered_only_when_set(defaults: Rendered) -> None:
    assert "runtimeClassName" not in defaults.pod("sandbox")["spec"]
    assert render("--set", "sandbox.runtimeClassName=gvisor").pod("sandbox")["spec"]["runtimeClassName"] == "gvisor"
    assert render(*values_args("gpu-production")).pod("sandbox")["spec"]["runtimeClassName"] == "gvisor"


# --- scaling ------------------------------------------------------------------------------------------------


def test_the_sandbox_autoscales_and_clients_balance_over_every_pod(defaults: Rendered) -> None:
    deployment = defaults.workload("sandbox")
    # The HPA owns the count: a replicas field would reset it on every upgrade.
    assert "replicas" not in deployment["spec"]
    hpa = defaults.get("HorizontalPodAutoscaler", name("sandbox"))
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name("sandbox")}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    pdb = defaults.get("PodDisruptionBudget", name("sandbox"))
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]

    headless = defaults.get("Service", name("sandbox") + "-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in headless["spec"]["ports"]] == [50051]
    target = f"dns:///{name('sandbox')}-headless.{NAMESPACE}.svc.cluster.local:50051"
    for caller in ["search", *POOLS, "trainer"]:
        assert defaults.settings(caller)[f"THINKMESH_{PREFIX[caller]}_SANDBOX_TARGET"] == target


def test_replicas_are_set_where_no_hpa_owns_them(defaults: Rendered) -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in defaults.of_kind("HorizontalPodAutoscaler")}
    for workload in defaults.workloads():
        assert ("replicas" in workload["spec"]) != (workload["metadata"]["name"] in hpas), workload["metadata"]["name"]
    off = render("--set", "sandbox.autoscaling.enabled=false")
    assert off.workload("sandbox")["spec"]["replicas"] == 2
    assert off.find("HorizontalPodAutoscaler", name("sandbox")) is None
    workers = render(*values_args("gpu-production"))
    assert "replicas" not in workers.workload(WORKER)["spec"]


def test_the_trainer_is_replaced_not_rolled(defaults: Rendered) -> None:
    assert defaults.workload("trainer")["spec"]["strategy"] == {"type": "Recreate"}
    assert defaults.workload("trainer")["spec"]["replicas"] == 1


# --- worker pools and KEDA ----------------------------------------------------------------------------------


def _keda(*args: str) -> Rendered:
    return render("--set", "worker.autoscaling.keda.enabled=true", *args)


def _trigger(r: Rendered, pool: str) -> dict[str, Any]:
    (trigger,) = r.get("ScaledObject", name(pool))["spec"]["triggers"]
    return trigger


def _auth(r: Rendered, pool: str) -> dict[str, tuple[str, str]]:
    """A pool's TriggerAuthentication as parameter -> (Secret, key)."""
    refs = r.get("TriggerAuthentication", name(pool))["spec"]["secretTargetRef"]
    return {ref["parameter"]: (ref["name"], ref["key"]) for ref in refs}


def test_each_queue_has_a_worker_pool_of_its_own(defaults: Rendered) -> None:
    assert name("worker") not in defaults.names("Deployment")
    selectors = []
    for pool in POOLS:
        deployment = defaults.workload(pool)
        assert defaults.container(pool)["args"] == ["worker"]
        assert defaults.container(pool)["envFrom"] == [{"configMapRef": {"name": name(pool)}}]
        assert defaults.settings(pool)["THINKMESH_SEARCH_QUEUES"] == QUEUE[pool]
        assert deployment["spec"]["replicas"] == 2
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == pool
        assert defaults.get("PodDisruptionBudget", name(pool))["spec"]["selector"]["matchLabels"] == selector
        assert defaults.get("NetworkPolicy", name(pool))["spec"]["podSelector"]["matchLabels"] == selector
        selectors.append(selector)
    assert selectors[0] != selectors[1]
    assert not defaults.of_kind("ScaledObject") and not defaults.of_kind("TriggerAuthentication")


def test_a_round_keeps_as_many_tasks_out_as_its_pools_run_at_their_largest(defaults: Rendered) -> None:
    # The trainer's bound on a round's queued tasks: round pods (at most) × their concurrency.
    assert defaults.settings("trainer")["THINKMESH_TRAINER_SEARCH_IN_FLIGHT"] == str(2 * 16)
    production = render(*values_args("gpu-production"))
    assert production.settings("trainer")["THINKMESH_TRAINER_SEARCH_IN_FLIGHT"] == str(32 * 32)  # KEDA's maximum
    mine = render("--set", "trainer.config.search_in_flight=7")
    assert mine.settings("trainer")["THINKMESH_TRAINER_SEARCH_IN_FLIGHT"] == "7"


def test_a_pool_s_values_merge_over_the_worker_s() -> None:
    r = render(
        "--set", "worker.replicas=3",
        "--set", "worker.config.policy_routing=round_robin",
        "--set", "worker.pools.round.replicas=5",
        "--set", "worker.pools.round.config.worker_concurrency=64",
        "--set", "worker.pools.round.resources.limits.cpu=4",
        "--set", "worker.pools.round.pdb.enabled=false",
    )  # fmt: skip
    solve, round_ = "worker-solve", "worker-round"
    assert r.workload(solve)["spec"]["replicas"] == 3 and r.workload(round_)["spec"]["replicas"] == 5
    assert r.settings(solve)["THINKMESH_SEARCH_WORKER_CONCURRENCY"] == "16"
    assert r.settings(round_)["THINKMESH_SEARCH_WORKER_CONCURRENCY"] == "64"
    for pool in POOLS:  # the rest of `worker` is every pool's
        assert r.settings(pool)["THINKMESH_SEARCH_POLICY_ROUTING"] == "round_robin"
        assert r.container(pool)["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert r.container(round_)["resources"]["limits"] == {"cpu": 4, "memory": "4Gi"}
    assert r.container(solve)["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert r.find("PodDisruptionBudget", name(round_)) is None
    assert r.find("PodDisruptionBudget", name(solve)) is not None
    validate(r.objects)


def test_one_pool_may_consume_both_queues() -> None:
    r = render("--set-json", 'worker.pools={"solve": null, "round": null, "all": {"queues": ["solve", "round"]}}')
    assert {n for n in r.names("Deployment") if "worker" in n} == {name("worker-all")}
    assert r.settings("worker-all")["THINKMESH_SEARCH_QUEUES"] == "solve,round"
    off = render("--set", "worker.pools.round.enabled=false")
    assert off.find("Deployment", name("worker-round")) is None and off.find("Deployment", name(WORKER))
    # Callers admit every pool's pods, and only those that run.
    (grpc,) = off.get("NetworkPolicy", name("sandbox"))["spec"]["ingress"][:1]
    assert _peers(grpc["from"]) == {"search", WORKER, "trainer"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["worker.pools.batch.replicas=1"], 'consumes queue "batch"'),
        (["worker.config.queues=solve"], "config.queues is set by the chart"),
        (
            ["worker.autoscaling.keda.enabled=true", "worker.autoscaling.minReplicas=0"],
            "worker.pools.solve consumes the solve queue",
        ),
        (
            ["redis.enabled=false", "redis.external.existingSecret=broker", "worker.autoscaling.keda.enabled=true"],
            "worker.autoscaling.keda.redis.address is required",
        ),
    ],
)
def test_pool_values_that_cannot_work_are_refused(settings: list[str], message: str) -> None:
    with pytest.raises(RenderError) as caught:
        render(*[arg for setting in settings for arg in ("--set", setting)])
    assert message in str(caught.value)


def test_the_values_schema_rejects_bad_pools() -> None:
    for setting in [
        "worker.pools.solve.queues={search}",
        "worker.pools.solve.image.tag=x",
        "worker.pools.Solve.replicas=1",
    ]:
        with pytest.raises(RenderError) as caught:
            render("--set", setting)
        assert "schema" in str(caught.value), setting


def test_without_keda_each_pool_may_have_a_cpu_hpa() -> None:
    r = render("--set", "worker.autoscaling.enabled=true", "--set", "worker.pools.round.autoscaling.maxReplicas=40")
    for pool in POOLS:
        hpa = r.get("HorizontalPodAutoscaler", name(pool))
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name(pool)}
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert "replicas" not in r.workload(pool)["spec"]
    assert r.get("HorizontalPodAutoscaler", name("worker-round"))["spec"]["maxReplicas"] == 40
    assert not r.of_kind("ScaledObject")


@pytest.mark.parametrize("value_set", ["keda", "gpu-production"])
def test_keda_scales_each_pool_on_its_queue_length(value_set: str) -> None:
    r = render(*values_args(value_set))
    validate(r.objects)
    redis = f"{name('redis')}.{NAMESPACE}.svc.cluster.local:6379"
    tls = value_set == "gpu-production"
    # The HPA beside it would fight KEDA's own: none for a pool KEDA scales, and no replicas field.
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in r.of_kind("HorizontalPodAutoscaler")}
    assert not hpas & {name(pool) for pool in POOLS}
    assert len(r.of_kind("ScaledObject")) == len(POOLS)
    for pool in POOLS:
        scaled = r.get("ScaledObject", name(pool))["spec"]
        assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name(pool)}
        assert 0 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
        assert "replicas" not in r.workload(pool)["spec"]
        trigger = _trigger(r, pool)
        assert trigger["type"] == "redis"
        # Celery's Redis transport keeps each queue as a list named after it, in the broker's database (/0).
        assert trigger["metadata"]["listName"] == QUEUE[pool] == r.settings(pool)["THINKMESH_SEARCH_QUEUES"]
        assert trigger["metadata"]["address"] == redis and trigger["metadata"]["databaseIndex"] == "0"
        assert int(trigger["metadata"]["listLength"]) >= 1
        assert trigger["authenticationRef"] == {"name": name(pool)}
        expected = {"password": (name("redis"), "password")}
        if tls:  # the in-chart Redis demands a client certificate from the release's CA
            assert trigger["metadata"]["enableTLS"] == "true"
            secret = f"{name(pool)}-tls"
            expected |= {"ca": (secret, "ca.crt"), "cert": (secret, "tls.crt"), "key": (secret, "tls.key")}
        else:
            assert "enableTLS" not in trigger["metadata"]
        assert _auth(r, pool) == expected
    # The solve pool stays warm: the SearchService is ready only while a worker beats.
    assert r.get("ScaledObject", name("worker-solve"))["spec"]["minReplicaCount"] >= 1
    # KEDA's operator reads the lists itself: Redis admits it.
    (rule,) = r.get("NetworkPolicy", name("redis"))["spec"]["ingress"]
    operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "keda-operator"}},
    }
    assert operator in rule["from"]


def test_keda_takes_its_limits_and_timings_from_values() -> None:
    r = _keda(
        "--set", "worker.autoscaling.minReplicas=3",
        "--set", "worker.autoscaling.keda.pollingInterval=5",
        "--set", "worker.pools.round.autoscaling.minReplicas=0",
        "--set", "worker.pools.round.autoscaling.maxReplicas=50",
        "--set", "worker.pools.round.autoscaling.keda.listLength=100",
        "--set", "worker.pools.round.autoscaling.keda.cooldownPeriod=600",
        "--set-json", 'worker.autoscaling.behavior={"scaleDown": {"stabilizationWindowSeconds": 120}}',
    )  # fmt: skip
    validate(r.objects)
    solve = r.get("ScaledObject", name("worker-solve"))["spec"]
    round_ = r.get("ScaledObject", name("worker-round"))["spec"]
    assert (solve["minReplicaCount"], solve["maxReplicaCount"], solve["pollingInterval"]) == (3, 16, 5)
    assert (round_["minReplicaCount"], round_["maxReplicaCount"], round_["cooldownPeriod"]) == (0, 50, 600)
    assert _trigger(r, "worker-round")["metadata"]["listLength"] == "100"
    assert _trigger(r, "worker-solve")["metadata"]["listLength"] == "16"
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 120}}
    assert solve["advanced"] == {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    # KEDA on one pool only: the other keeps its CPU HPA.
    mixed = render(
        "--set", "worker.autoscaling.enabled=true", "--set", "worker.pools.round.autoscaling.keda.enabled=true"
    )  # fmt: skip
    assert mixed.names("ScaledObject") == {name("worker-round")}
    assert name("worker-solve") in mixed.names("HorizontalPodAutoscaler")
    assert name("worker-round") not in mixed.names("HorizontalPodAutoscaler")


def test_keda_reads_an_external_redis_where_the_broker_does() -> None:
    r = _keda(*values_args("external-redis"))
    validate(r.objects)
    for pool in POOLS:
        trigger = _trigger(r, pool)
        # From redis.external.url: rediss://:change-me@redis.example.internal:6380/0
        assert trigger["metadata"]["address"] == "redis.example.internal:6380"
        assert trigger["metadata"]["enableTLS"] == "true" and trigger["metadata"]["databaseIndex"] == "0"
        assert _auth(r, pool) == {"password": (name("redis"), "password")}
    assert r.get("Secret", name("redis"))["stringData"]["password"] == "change-me"
    # Without KEDA the broker's Secret keeps the URLs only.
    assert "password" not in render(*values_args("external-redis")).get("Secret", name("redis"))["stringData"]
    given = _keda(
        "--set", "redis.enabled=false",
        "--set", "redis.external.existingSecret=broker",
        "--set", "worker.autoscaling.keda.redis.address=redis.internal:6379",
        "--set", "worker.autoscaling.keda.redis.databaseIndex=2",
        "--set", "worker.autoscaling.keda.redis.passwordSecret.name=redis-auth",
    )  # fmt: skip
    validate(given.objects)
    metadata = _trigger(given, WORKER)["metadata"]
    assert (metadata["address"], metadata["databaseIndex"]) == ("redis.internal:6379", "2")
    assert "enableTLS" not in metadata
    assert _auth(given, WORKER) == {"password": ("redis-auth", "password")}
    bare = _keda(
        "--set", "redis.enabled=false",
        "--set", "redis.external.url=redis://redis.internal:6379/0",
    )  # fmt: skip
    assert "authenticationRef" not in _trigger(bare, WORKER) and not bare.of_kind("TriggerAuthentication")


def test_the_vendored_keda_schemas_reject_what_keda_would() -> None:
    scaled = render(*values_args("keda")).get("ScaledObject", name(WORKER))
    jsonschema.validate(scaled, _vendored_schema(scaled))
    bad = [
        {**scaled, "spec": {**scaled["spec"], "maxReplicas": 3}},  # an HPA field, not KEDA's
        {**scaled, "spec": {k: v for k, v in scaled["spec"].items() if k != "scaleTargetRef"}},
        {**scaled, "spec": {**scaled["spec"], "triggers": [{"type": "redis", "metadata": {"listLength": 5}}]}},
    ]
    for obj in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(obj, _vendored_schema(obj))


# --- network ------------------------------------------------------------------------------------------------


def test_a_default_deny_policy_covers_every_pod(defaults: Rendered) -> None:
    deny = defaults.get("NetworkPolicy", f"{RELEASE}-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    selector = deny["spec"]["podSelector"]["matchLabels"]
    for workload in defaults.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_each_component_admits_only_its_callers(value_set: str) -> None:
    r = render(*values_args(value_set))
    clients_restricted = value_set == "gpu-production"
    expected = {
        "sandbox": {"search", *POOLS, "trainer"},
        "policy": {"search", *POOLS, "trainer"},
        "ppm": {"search", *POOLS, "trainer"},
        # Users of the API: any source by default (tokens / TLS guard it), or networkPolicy.clients.
        "search": {"other"} if clients_restricted else None,
        "trainer": {"other"} if clients_restricted else None,
    }
    for component in _enabled(r):
        policy = r.get("NetworkPolicy", name(component))
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        if component == "redis":
            # KEDA's operator too, where it scales the worker pools on their queues (networkPolicy.kedaOperator).
            keda = {"other"} if r.of_kind("ScaledObject") else set()
            assert _peers(_rule_on_port(spec["ingress"], "redis")["from"]) == {"search", *POOLS, "trainer"} | keda
            continue
        grpc = _rule_on_port(spec["ingress"], "grpc")
        if component in POOLS:
            assert grpc is None
        elif expected[component] is None:
            assert "from" not in grpc, component
        else:
            assert _peers(grpc["from"]) == expected[component], component
        metrics = _rule_on_port(spec["ingress"], "metrics")
        assert metrics["from"] == [{"namespaceSelector": {"matchLabels": MONITORING}}]
        assert len(spec["ingress"]) == (1 if component in POOLS else 2)


def test_callers_reach_exactly_what_they_call(defaults: Rendered) -> None:
    for component in ["search", *POOLS, "trainer"]:
        egress = defaults.get("NetworkPolicy", name(component))["spec"]["egress"]
        reached = {}
        for rule in egress:
            for peer in _peers(rule.get("to")):
                reached.setdefault(peer, set()).update(p["port"] for p in rule["ports"])
        assert reached == {
            "other": {53},  # cluster DNS
            "sandbox": {50051},
            "policy": {50052},
            "ppm": {50053},
            "redis": {6379},
        }, component
    for component in ["policy", "ppm"]:
        assert defaults.get("NetworkPolicy", name(component))["spec"]["egress"] == []


def test_the_sandbox_and_redis_have_no_egress_at_all(defaults: Rendered) -> None:
    for component in ["sandbox", "redis"]:
        spec = defaults.get("NetworkPolicy", name(component))["spec"]
        assert "Egress" in spec["policyTypes"] and spec["egress"] == [], component
    # Not even when other components get extra egress.
    r = render("--set-json", 'networkPolicy.extraEgress.policy=[{"ports":[{"port":443}]}]')
    assert r.get("NetworkPolicy", name("sandbox"))["spec"]["egress"] == []
    assert {"ports": [{"port": 443}]} in r.get("NetworkPolicy", name("policy"))["spec"]["egress"]


def test_network_policies_select_the_pods_they_name(defaults: Rendered) -> None:
    """Every podSelector in every policy matches the pod labels of the component it names."""
    pod_labels = {
        o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"]["template"]["metadata"][
            "labels"
        ]
        for o in defaults.pod_owners()
    }
    for policy in defaults.of_kind("NetworkPolicy"):
        spec = policy["spec"]
        peers = [p for rule in spec.get("ingress", []) for p in rule.get("from", [])]
        peers += [p for rule in spec.get("egress", []) for p in rule.get("to", [])]
        for selector in [spec["podSelector"], *(p["podSelector"] for p in peers if set(p) == {"podSelector"})]:
            labels = selector["matchLabels"]
            component = labels.get("app.kubernetes.io/component")
            targets = [component] if component else list(pod_labels)
            for target in targets:
                assert labels.items() <= pod_labels[target].items(), (policy["metadata"]["name"], target)


# --- secrets, TLS and the store -------------------------------------------------------------------------------


def test_api_tokens_are_mounted_read_only_into_search_and_trainer(defaults: Rendered) -> None:
    for api in ("search", "trainer"):  # the API: nothing may start a round without a token either
        mount = _volume_mounts(defaults, api)["auth"]
        assert mount["readOnly"] is True
        volume = _volumes(defaults, api)["auth"]["secret"]
        assert volume["secretName"] == f"{RELEASE}-auth" and volume["defaultMode"] == 0o440
        variable = f"THINKMESH_{api.upper()}_AUTH_TOKENS_FILE"
        assert defaults.settings(api)[variable] == f"{mount['mountPath']}/tokens"
    # No token in the rendering: the secrets Job creates the Secret in the cluster (see the secrets tests).
    assert defaults.find("Secret", f"{RELEASE}-auth") is None
    for component in ["policy", "ppm", "sandbox", *POOLS]:
        assert "auth" not in _volume_mounts(defaults, component)
    existing = render("--set", "auth.existingSecret=my-tokens")
    assert existing.find("Secret", f"{RELEASE}-auth") is None
    assert _volumes(existing, "search")["auth"]["secret"]["secretName"] == "my-tokens"
    given = render("--set-json", 'auth.tokens=["a-token-of-the-operators-own-1234"]')
    assert given.get("Secret", f"{RELEASE}-auth")["stringData"]["tokens"] == "a-token-of-the-operators-own-1234\n"


def test_without_tls_every_service_is_explicitly_insecure(defaults: Rendered) -> None:
    for component in ["policy", "ppm", "sandbox", "search", *POOLS, "trainer"]:
        settings = defaults.settings(component)
        assert settings[f"THINKMESH_{PREFIX[component]}_INSECURE"] == "true"
        assert not any(key.endswith(("_TLS_CERT", "_TLS_KEY", "_TLS_CA")) for key in settings)


def test_with_tls_certificates_are_mounted_read_only_and_probes_speak_tls() -> None:
    r = render(*TLS)
    called = {"policy", "ppm", "sandbox"}  # servers other components call: mutual TLS
    callers = {"search", *POOLS, "trainer"}  # verify the services they call against the CA
    for component in ["policy", "ppm", "sandbox", "search", *POOLS, "trainer"]:
        prefix = f"THINKMESH_{PREFIX[component]}_"
        settings = r.settings(component)
        assert f"{prefix}INSECURE" not in settings
        assert settings[f"{prefix}TLS_CERT"] == "/etc/thinkmesh/tls/tls.crt"
        assert settings[f"{prefix}TLS_KEY"] == "/etc/thinkmesh/tls/tls.key"
        # A CA on a server turns on mutual TLS: it demands client certificates.
        assert settings.get(f"{prefix}TLS_CA") == ("/etc/thinkmesh/tls/ca.crt" if component in called else None)
        assert settings.get(f"{prefix}CLIENT_TLS_CA") == ("/etc/thinkmesh/tls/ca.crt" if component in callers else None)
        assert _volume_mounts(r, component)["tls"] == {
            "name": "tls",
            "mountPath": "/etc/thinkmesh/tls",
            "readOnly": True,
        }
        assert _volumes(r, component)["tls"]["secret"]["secretName"] == "thinkmesh-tls"
    for component in GRPC_SERVICES:
        probe = r.container(component)["readinessProbe"]
        assert "grpc" not in probe, "the kubelet's gRPC probe cannot speak TLS"
        command = probe["exec"]["command"]
        assert command[:2] == ["python3", "-c"]
        assert command[3:6] == [
            "/etc/thinkmesh/tls",
            f"127.0.0.1:{PORTS[component]}",
            f"{name(component)}.{NAMESPACE}.svc.cluster.local",
        ]


def test_api_users_present_certificates_only_when_asked() -> None:
    r = render(*TLS, "--set", "tls.apiClientCertificates=true")
    assert r.settings("search")["THINKMESH_SEARCH_TLS_CA"] == "/etc/thinkmesh/tls/ca.crt"
    assert r.settings("trainer")["THINKMESH_TRAINER_TLS_CA"] == "/etc/thinkmesh/tls/ca.crt"
    assert "THINKMESH_SEARCH_TLS_CA" not in r.settings(WORKER)


def test_the_worker_binds_its_metrics_on_every_interface(defaults: Rendered) -> None:
    assert defaults.settings(WORKER)["THINKMESH_SEARCH_HOST"] == "0.0.0.0"
    # gRPC servers get their address on the command line instead.
    assert "THINKMESH_SEARCH_HOST" not in defaults.settings("search")


def test_cert_manager_issues_one_certificate_per_service() -> None:
    r = render(*values_args("gpu-production"))
    certificates = {c["metadata"]["name"]: c for c in r.of_kind("Certificate")}
    everyone = ["policy", "ppm", "sandbox", "search", *POOLS, "trainer", "redis"]
    assert set(certificates) == {name(c) for c in everyone}
    for component in everyone:
        spec = certificates[name(component)]["spec"]
        assert spec["issuerRef"] == {"name": "thinkmesh-ca", "kind": "Issuer", "group": "cert-manager.io"}
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert f"{name(component)}.{NAMESPACE}.svc.cluster.local" in spec["dnsNames"]
        assert _volumes(r, component)["tls"]["secret"]["secretName"] == spec["secretName"]
    # Callers reach sandbox, policy and ppm through the headless names: those must be in the certificates.
    for component in ["sandbox", "policy", "ppm"]:
        target = r.settings("search")[f"THINKMESH_SEARCH_{component.upper()}_TARGET"]
        host = target.removeprefix("dns:///").rsplit(":", 1)[0]
        assert host in certificates[name(component)]["spec"]["dnsNames"]


def test_the_store_is_a_shared_claim_mounted_where_models_live(defaults: Rendered) -> None:
    claim = defaults.get("PersistentVolumeClaim", f"{RELEASE}-store")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    expected = {"policy": True, "ppm": True, **dict.fromkeys(POOLS, False), "trainer": False}
    for component in ["policy", "ppm", "sandbox", "search", *POOLS, "trainer"]:
        mounts = _volume_mounts(defaults, component)
        if component not in expected:
            assert "store" not in mounts, component
            continue
        assert mounts["store"]["mountPath"] == "/var/lib/thinkmesh/store"
        assert mounts["store"]["readOnly"] is expected[component], component
        assert _volumes(defaults, component)["store"]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-store"
        assert defaults.settings(component)["THINKMESH_STORE"] == "/var/lib/thinkmesh/store"
    existing = render("--set", "store.existingClaim=models")
    assert existing.find("PersistentVolumeClaim", f"{RELEASE}-store") is None
    assert _volumes(existing, "trainer")["store"]["persistentVolumeClaim"]["claimName"] == "models"


# --- the broker -----------------------------------------------------------------------------------------------


def _broker_env(r: Rendered, component: str) -> tuple[str, str]:
    """The Secret an external Redis's URLs come from (and the settings' prefix)."""
    env = _env(r, component)
    prefix = f"THINKMESH_{PREFIX[component]}_"
    refs = [env[f"{prefix}{key}"]["valueFrom"]["secretKeyRef"] for key in ("BROKER_URL", "RESULT_BACKEND")]
    assert [ref["key"] for ref in refs] == ["broker-url", "result-backend"]
    assert refs[0]["name"] == refs[1]["name"]
    return refs[0]["name"], prefix


def _broker_urls(r: Rendered, component: str) -> tuple[list[str], dict[str, Any]]:
    """The in-chart Redis's URLs as a pod's env spells them, and the password's secretKeyRef, which the env
    defines before the URLs (Kubernetes expands $(REDIS_PASSWORD) only from variables defined earlier)."""
    env = r.container(component)["env"]
    names = [e["name"] for e in env]
    prefix = f"THINKMESH_{PREFIX[component]}_"
    urls = [prefix + "BROKER_URL", prefix + "RESULT_BACKEND"]
    assert names.index("REDIS_PASSWORD") < min(names.index(u) for u in urls)
    values = {e["name"]: e for e in env}
    return [values[u]["value"] for u in urls], values["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]


def test_the_chart_runs_a_small_password_protected_redis(defaults: Rendered) -> None:
    redis = defaults.workload("redis")
    assert redis["spec"]["replicas"] == 1
    assert redis["spec"]["serviceName"] == f"{RELEASE}-redis-headless"
    assert defaults.get("Service", f"{RELEASE}-redis-headless")["spec"]["clusterIP"] == "None"
    args = defaults.container("redis")["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    # No password in the rendering: the secrets Job creates it; Redis and its clients read the same key.
    assert defaults.find("Secret", f"{RELEASE}-redis") is None
    password = {"name": f"{RELEASE}-redis", "key": "password"}
    redis_env = {e["name"]: e for e in defaults.container("redis")["env"]}
    assert redis_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == password
    host = f"{RELEASE}-redis.{NAMESPACE}.svc.cluster.local:6379"
    for component in ["search", *POOLS, "trainer"]:
        urls, ref = _broker_urls(defaults, component)
        assert urls == [f"redis://:$(REDIS_PASSWORD)@{host}/0", f"redis://:$(REDIS_PASSWORD)@{host}/1"]
        assert ref == password
    given = render("--set", "redis.auth.password=s3cret-Pass.word")
    assert given.get("Secret", f"{RELEASE}-redis")["stringData"] == {"password": "s3cret-Pass.word"}
    existing = render("--set", "redis.auth.existingSecret=ops-redis", "--set", "redis.auth.existingSecretKey=pw")
    assert existing.find("Secret", f"{RELEASE}-redis") is None
    assert _broker_urls(existing, WORKER)[1] == {"name": "ops-redis", "key": "pw"}
    with pytest.raises(RenderError):
        render("--set", "redis.auth.password=has/slash")  # it goes into URLs unquoted
    for component in ["policy", "ppm", "sandbox"]:
        assert not any(key.endswith("BROKER_URL") for key in _env(defaults, component))


def test_external_redis_replaces_the_statefulset() -> None:
    r = render(*values_args("external-redis"))
    assert not r.of_kind("StatefulSet")
    assert f"{RELEASE}-redis" not in r.names("Service")
    assert r.find("NetworkPolicy", name("redis")) is None
    external = yaml.safe_load((CHART.parent / "values" / "external-redis.yaml").read_text())["redis"]["external"]
    secret = r.get("Secret", f"{RELEASE}-redis")["stringData"]
    assert secret == {"broker-url": external["url"], "result-backend": external["resultBackend"]}
    for component in ["search", *POOLS, "trainer"]:
        assert _broker_env(r, component)[0] == f"{RELEASE}-redis"
        egress = r.get("NetworkPolicy", name(component))["spec"]["egress"]
        assert {"ports": [{"port": 6380, "protocol": "TCP"}], "to": external["to"]} in egress
    by_secret = render("--set", "redis.enabled=false", "--set", "redis.external.existingSecret=broker")
    assert by_secret.find("Secret", f"{RELEASE}-redis") is None
    assert _broker_env(by_secret, WORKER)[0] == "broker"


# --- what users read ------------------------------------------------------------------------------------------


def test_notes_show_how_to_call_solve() -> None:
    proc = subprocess.run(
        [str(HELM), "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"port-forward svc/{name('search')} 50054:50054" in notes
    assert "thinkmesh.v1.SearchService/Solve" in notes
    assert "authorization: Bearer $TOKEN" in notes
    assert "gvisor" in notes


def test_the_chart_readme_shows_a_gpu_and_a_cpu_install() -> None:
    readme = (CHART / "README.md").read_text()
    assert "Qwen2.5-Math-7B" in readme and "values/gpu-production.yaml" in readme
    assert "values/cpu-trial.yaml" in readme
    assert "helm install" in readme


def test_update_strategy_priority_and_spread_are_the_operators_to_choose() -> None:
    spread = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}]
    r = render(
        "--set", "policy.strategy.type=Recreate",
        "--set", "policy.priorityClassName=gpu-serving",
        "--set-json", f"sandbox.topologySpreadConstraints={json.dumps(spread)}",
        "--set", "redis.strategy.type=OnDelete",
    )  # fmt: skip
    policy = r.workload("policy")
    assert policy["spec"]["strategy"] == {"type": "Recreate"}  # a single-GPU pool: no surge pod waiting for a GPU
    assert policy["spec"]["template"]["spec"]["priorityClassName"] == "gpu-serving"
    assert r.workload("sandbox")["spec"]["template"]["spec"]["topologySpreadConstraints"] == spread
    assert r.workload("redis")["spec"]["updateStrategy"] == {"type": "OnDelete"}
    validate(r.objects)
    defaults = render()
    # GPU pods: one at a time and no surge pod, which would wait for a GPU that is not there.
    no_surge = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert defaults.workload("policy")["spec"]["strategy"] == no_surge
    assert defaults.workload("ppm")["spec"]["strategy"] == no_surge
    assert defaults.workload("sandbox")["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert defaults.workload("trainer")["spec"]["strategy"] == {"type": "Recreate"}
    assert "priorityClassName" not in defaults.workload("policy")["spec"]["template"]["spec"]
    with pytest.raises(RenderError):
        render("--set", "policy.strategy.type=Sometimes")  # the schema names the two kinds
