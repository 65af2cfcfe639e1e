"""What a first `helm install` on an empty cluster needs beyond the pods: secrets nothing renders, a seeded store
that serving pods wait for, model rollouts the trainer may drive and nothing more, a uid per component, TLS to
Redis, and the sandbox's seccomp profile on the nodes (docs/operations.md, "Installing")."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from e2e.helmchart import (
    CHART,
    HELM,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Rendered,
    RenderError,
    name,
    render,
    validate,
    values_args,
)

TLS = ["--set", "tls.enabled=true", "--set", "tls.existingSecret=thinkmesh-tls"]
SERVING = ["policy", "ppm", "sandbox", "search", "worker-solve", "worker-round", "trainer"]


def _containers(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec.get("initContainers", []) + pod_spec["containers"]}


def _rules(r: Rendered, role: str) -> list[dict[str, Any]]:
    return list(r.get("Role", role)["rules"])


def _api_egress(policy: dict[str, Any]) -> dict[str, Any]:
    (rule,) = [rule for rule in policy["spec"]["egress"] if {p["port"] for p in rule["ports"]} == {443, 6443}]
    return rule


# --- secrets: nothing random is rendered --------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_two_renders_of_the_same_values_are_identical(value_set: str) -> None:
    """What GitOps tools do: `helm template` again must not produce a new password or token."""
    args = [str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values_args(value_set)]
    first, second = (subprocess.run(args, capture_output=True, text=True, check=True).stdout for _ in range(2))
    assert first == second


def test_no_template_reads_the_cluster_or_makes_up_values() -> None:
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            text = template.read_text()
            assert "lookup" not in text, template
            assert "randAlpha" not in text and "randAscii" not in text, template


def test_the_secrets_job_creates_what_no_value_names(defaults: Rendered) -> None:
    job = defaults.job("secrets")["spec"]["template"]["spec"]
    made = {
        (c["args"][c["args"].index("--name") + 1], c["args"][c["args"].index("--random") + 1])
        for c in job["containers"]
    }
    assert made == {(f"{RELEASE}-redis", "password"), (f"{RELEASE}-auth", "tokens")}
    assert all(c["args"][:2] == ["secrets", "ensure"] for c in job["containers"])
    assert all(c["image"].endswith(f"thinkmesh-search:{c['image'].rsplit(':', 1)[1]}") for c in job["containers"])
    # Its own account, allowed to create Secrets and to read and complete only the ones it makes.
    assert job["serviceAccountName"] == name("secrets") and job["automountServiceAccountToken"] is True
    assert _rules(defaults, name("secrets")) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"{RELEASE}-redis", f"{RELEASE}-auth"],
            "verbs": ["get", "patch"],
        },
    ]
    binding = defaults.get("RoleBinding", name("secrets"))
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name("secrets"), "namespace": NAMESPACE}]
    # Out: DNS and the API server; in: nothing.
    policy = defaults.get("NetworkPolicy", name("secrets"))
    assert policy["spec"]["ingress"] == [] and len(policy["spec"]["egress"]) == 2
    assert "to" not in _api_egress(policy)  # networkPolicy.apiServer.to narrows it


def test_given_secrets_need_no_job() -> None:
    given = render(
        "--set", "redis.auth.existingSecret=ops-redis",
        "--set-json", 'auth.tokens=["a-token-of-the-operators-own-1234"]',
    )  # fmt: skip
    assert not given.of_kind("Job") or all(
        j["metadata"]["labels"]["app.kubernetes.io/component"] != "secrets" for j in given.of_kind("Job")
    )
    assert given.find("Role", name("secrets")) is None and given.find("ServiceAccount", name("secrets")) is None
    only_tokens = render("--set", "redis.auth.password=kept-in-values")
    (container,) = only_tokens.job("secrets")["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--name") + 1] == f"{RELEASE}-auth"
    # A different set of secrets is a different Job: a Job's pod template cannot change in place.
    assert only_tokens.job("secrets")["metadata"]["name"] != render().job("secrets")["metadata"]["name"]


# --- the seed -----------------------------------------------------------------------------------------------------


def test_the_default_seed_bootstraps_the_embedded_models_once(defaults: Rendered) -> None:
    job = defaults.job("seed")
    spec = job["spec"]["template"]["spec"]
    (step,) = spec["containers"]
    assert step["args"] == ["bootstrap", "--preset", "small"]  # does nothing on a store that has models
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    mounts = {m["name"]: m for m in step["volumeMounts"]}
    assert mounts["store"]["mountPath"] == "/var/lib/thinkmesh/store" and not mounts["store"].get("readOnly")
    assert {"name": "THINKMESH_STORE", "value": "/var/lib/thinkmesh/store"} in step["env"]
    # The trainer's image, uid and placement; no API token, no traffic at all.
    trainer = defaults.pod("trainer")["spec"]
    assert step["image"] == defaults.container("trainer")["image"]
    assert spec["securityContext"] == trainer["securityContext"]
    assert spec["nodeSelector"] == trainer["nodeSelector"] and spec["tolerations"] == trainer["tolerations"]
    assert spec["automountServiceAccountToken"] is False
    policy = defaults.get("NetworkPolicy", name("seed"))["spec"]
    assert policy["ingress"] == [] and policy["egress"] == []


def test_model_pods_wait_for_the_seed(defaults: Rendered) -> None:
    for kind in ("policy", "ppm"):
        (wait,) = defaults.pod(kind)["spec"]["initContainers"]
        assert wait["args"] == ["models", "wait", "--kind", kind, "--store", "/var/lib/thinkmesh/store"]
        assert wait["image"] == defaults.container(kind)["image"]
        assert {"name": "store", "mountPath": "/var/lib/thinkmesh/store", "readOnly": True} in wait["volumeMounts"]
    for component in ("sandbox", "search", "worker-solve", "trainer"):
        assert "initContainers" not in defaults.pod(component)["spec"], component
    pinned = render("--set", "policy.config.model=/var/lib/thinkmesh/store/hf/my-model")
    assert "initContainers" not in pinned.pod("policy")["spec"]  # it loads its path, not the store's current
    assert "initContainers" in pinned.pod("ppm")["spec"]


def test_import_seeds_from_the_operators_volume() -> None:
    volume = {"persistentVolumeClaim": {"claimName": "checkpoints", "readOnly": True}}
    r = render(
        "--set", "seed.mode=import",
        "--set", "seed.import.policy=/models/qwen2.5-math-7b",
        "--set", "seed.import.promptFormat=chat",
        "--set-json", f"seed.import.volume={json.dumps(volume)}",
        "--set", "seed.import.hubToken.name=hf",
        "--set", "seed.import.hubToken.key=token",
    )  # fmt: skip
    spec = r.job("seed")["spec"]["template"]["spec"]
    steps = _containers(spec)
    # The policy first (an init container), then the PPM from the same checkpoint; each only into an empty slot.
    assert [c["name"] for c in spec["initContainers"]] == ["import-policy"]
    for kind in ("policy", "ppm"):
        args = steps[f"import-{kind}"]["args"]
        assert args[:5] == ["models", "import", "/models/qwen2.5-math-7b", "--kind", kind]
        assert "--if-empty" in args and args[args.index("--prompt-format") + 1] == "chat"
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in steps[f"import-{kind}"]["volumeMounts"]
        token = {e["name"]: e for e in steps[f"import-{kind}"]["env"]}["HF_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert {"name": "models", **volume} in spec["volumes"]
    validate(r.objects)
    with pytest.raises(RenderError, match=r"seed\.import\.policy"):
        render("--set", "seed.mode=import")
    none = render("--set", "seed.mode=none")
    assert all(j["metadata"]["labels"]["app.kubernetes.io/component"] != "seed" for j in none.of_kind("Job"))
    assert "initContainers" in none.pod("policy")["spec"]  # the operator seeds; the pods still wait


# --- model rollout ------------------------------------------------------------------------------------------------


def test_the_trainer_may_roll_exactly_the_two_model_deployments(defaults: Rendered) -> None:
    assert _rules(defaults, f"{name('trainer')}-rollout") == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": [name("policy"), name("ppm")],
            "verbs": ["get", "patch"],
        }
    ]
    binding = defaults.get("RoleBinding", f"{name('trainer')}-rollout")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name("trainer"), "namespace": NAMESPACE}]
    pod = defaults.pod("trainer")["spec"]
    assert pod["serviceAccountName"] == name("trainer") and pod["automountServiceAccountToken"] is True
    settings = defaults.settings("trainer")
    assert settings["THINKMESH_TRAINER_KUBE_NAMESPACE"] == NAMESPACE
    assert settings["THINKMESH_TRAINER_KUBE_POLICY_DEPLOYMENT"] == name("policy")
    assert settings["THINKMESH_TRAINER_KUBE_PPM_DEPLOYMENT"] == name("ppm")
    assert settings["THINKMESH_TRAINER_WAIT_FOR"] == "policy,ppm"
    # The rolled pods load the current version at start and do not reload by themselves.
    assert defaults.settings("policy")["THINKMESH_POLICY_RELOAD"] == "off"
    assert defaults.settings("ppm")["THINKMESH_PPM_RELOAD"] == "off"
    _api_egress(defaults.get("NetworkPolicy", name("trainer")))
    # Nothing else gets an API token.
    for component in ("policy", "ppm", "sandbox", "search", "worker-solve", "redis"):
        assert defaults.pod(component)["spec"]["automountServiceAccountToken"] is False, component


def test_without_rollout_pods_reload_in_place_and_the_trainer_has_no_api_access() -> None:
    r = render("--set", "trainer.rollout.enabled=false")
    assert r.find("Role", f"{name('trainer')}-rollout") is None
    assert r.find("ServiceAccount", name("trainer")) is None
    assert r.pod("trainer")["spec"]["automountServiceAccountToken"] is False
    assert "THINKMESH_TRAINER_KUBE_NAMESPACE" not in r.settings("trainer")
    assert "THINKMESH_POLICY_RELOAD" not in r.settings("policy")  # auto: replace on vLLM, swap on hf
    trainer_egress = r.get("NetworkPolicy", name("trainer"))["spec"]["egress"]
    assert not [rule for rule in trainer_egress if any(p["port"] == 6443 for p in rule.get("ports", []))]


def test_the_trainer_waits_only_for_services_that_follow_the_store() -> None:
    pinned = render("--set", "policy.config.model=/var/lib/thinkmesh/store/hf/Qwen2.5-Math-7B")
    assert pinned.settings("trainer")["THINKMESH_TRAINER_WAIT_FOR"] == "ppm"
    both = render("--set", "policy.config.model=/models/p", "--set", "ppm.config.model=/models/q")
    assert both.settings("trainer")["THINKMESH_TRAINER_WAIT_FOR"] == ""
    assert "THINKMESH_TRAINER_KUBE_NAMESPACE" not in both.settings("trainer")  # nothing to roll to
    assert both.find("Role", f"{name('trainer')}-rollout") is None
    narrowed = render("--set-json", 'networkPolicy.apiServer.to=[{"ipBlock": {"cidr": "10.0.0.1/32"}}]')
    assert _api_egress(narrowed.get("NetworkPolicy", name("trainer")))["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


# --- identities ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_each_component_runs_as_its_own_uid(value_set: str) -> None:
    r = render(*values_args(value_set))
    uids = {c: r.pod(c)["spec"]["securityContext"]["runAsUser"] for c in SERVING}
    # The workers (both pools) and the trainer write the store's files together: one owner. Every other pair
    # differs, so no per-uid limit (RLIMIT_NPROC counts a uid's processes on the node) is shared with a neighbour.
    assert uids["worker-solve"] == uids["worker-round"] == uids["trainer"]
    others = [uid for c, uid in uids.items() if c not in ("trainer", "worker-round")]
    assert len(set(others)) == len(others), uids
    assert {r.pod(c)["spec"]["securityContext"]["runAsGroup"] for c in SERVING} == {10001}


# --- TLS to Redis -------------------------------------------------------------------------------------------------


def test_with_tls_redis_speaks_only_mutual_tls() -> None:
    r = render(*TLS)
    args = r.container("redis")["args"]
    assert args[args.index("--port") + 1] == "0"  # no plaintext port
    assert args[args.index("--tls-port") + 1] == "6379"
    assert args[args.index("--tls-auth-clients") + 1] == "yes"
    assert args[args.index("--tls-ca-cert-file") + 1] == "/etc/thinkmesh/tls/ca.crt"
    assert {"name": "tls", "mountPath": "/etc/thinkmesh/tls", "readOnly": True} in r.container("redis")["volumeMounts"]
    probe = r.container("redis")["readinessProbe"]["exec"]["command"][2]
    assert "--tls" in probe and "--cert /etc/thinkmesh/tls/tls.crt" in probe
    host = f"{RELEASE}-redis.{NAMESPACE}.svc.cluster.local:6379"
    for component, prefix in (("search", "SEARCH"), ("worker-solve", "SEARCH"), ("trainer", "TRAINER")):
        env = {e["name"]: e.get("value") for e in r.container(component)["env"]}
        assert env[f"THINKMESH_{prefix}_BROKER_URL"] == f"rediss://:$(REDIS_PASSWORD)@{host}/0"
        settings = r.settings(component)
        assert settings[f"THINKMESH_{prefix}_BROKER_TLS_CA"] == "/etc/thinkmesh/tls/ca.crt"
        assert settings[f"THINKMESH_{prefix}_BROKER_TLS_CERT"] == "/etc/thinkmesh/tls/tls.crt"
        assert settings[f"THINKMESH_{prefix}_BROKER_TLS_KEY"] == "/etc/thinkmesh/tls/tls.key"
    plain = render()
    assert "BROKER_TLS_CA" not in "".join(plain.settings("worker-solve"))


# --- the sandbox's seccomp profile --------------------------------------------------------------------------------


def test_the_sandbox_profile_ships_with_the_chart_and_reaches_its_nodes(defaults: Rendered) -> None:
    shipped = (CHART / "files" / "seccomp" / "sandbox.json").read_text()
    json.loads(shipped)  # a profile the runtime can parse
    assert defaults.get("ConfigMap", name("seccomp"))["data"] == {"sandbox.json": shipped}
    installer = defaults.get("DaemonSet", name("seccomp"))["spec"]["template"]
    sandbox = defaults.pod("sandbox")["spec"]
    assert installer["spec"]["affinity"] == sandbox["affinity"]  # on every node the sandbox may run on
    assert installer["metadata"]["annotations"]["checksum/profile"]  # a new profile rolls the installer
    (container,) = installer["spec"]["containers"]
    assert "/host/sandbox.json" in container["args"][0]
    off = render("--set", "sandbox.seccompInstaller.enabled=false")
    assert off.find("DaemonSet", name("seccomp")) is None
    root = render("--set", "sandbox.seccompInstaller.kubeletRoot=/var/lib/rancher/k3s/agent/kubelet/")
    volumes = root.get("DaemonSet", name("seccomp"))["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "host",
        "hostPath": {"path": "/var/lib/rancher/k3s/agent/kubelet/seccomp/thinkmesh", "type": "DirectoryOrCreate"},
    } in volumes
