"""A tiny kubelet: the chart's rendered workloads as `docker run` arguments.

`helm template` gives the Deployments and StatefulSets as a cluster would receive them. `Kubelet.pod()` reads one
workload's pod spec and says how Docker runs it: the same image, command and arguments, environment (ConfigMaps
and Secrets resolved from the same rendering), user and groups, capabilities, seccomp, read-only root, volumes and
limits, under the names of every Service that selects it. It translates; it does not know the chart's templates.

It plays the Job controller's part too: a Job's pod runs once, and an Indexed Job (the trainer's training stages,
services/trainer/training/jobs.py) has one pod per completion index, all at once (`Kubelet.pods()`), each with its
index in the annotation and label the controller sets, under the hostname `<job>-<index>` and, with a
`subdomain`, the DNS names its headless Service gives it. The objects a controller or the trainer creates (that
Service) are translated from the same `Rendered`: add them to the chart's.

A field it does not translate fails the run (`Untranslated`), so that a change to the chart cannot be silently
left out here. What has no meaning on one Docker host is named in the `*_IGNORED` sets below, with the reason.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from e2e.helmchart import Rendered

# The kubelet's --cluster-domain: the Services' fully qualified names end in it (the chart's clusterDomain must
# name the same domain, or its gRPC targets do not resolve).
CLUSTER_DOMAIN = "cluster.local"

POD_IGNORED = {
    "serviceAccountName",  # no API server here; automountServiceAccountToken must be false (checked)
    "nodeSelector",  # scheduling: there is one Docker host
    "affinity",
    "tolerations",
    "priorityClassName",  # scheduling and preemption: one host, nothing to preempt
    "imagePullSecrets",  # the images are local; nothing is pulled
}
# RuntimeClasses with nothing to translate. nvidia is the NVIDIA container runtime, which exposes a pod's GPUs: on a
# host with GPUs Docker's `--gpus` (from the nvidia.com/gpu limit) does that, on one without there are none. Any
# other (gVisor, Kata) is an isolation layer that plain Docker does not give: it fails.
RUNTIME_CLASSES_IGNORED = {"nvidia"}
# Resources with no meaning on a Docker host without GPUs (`Kubelet.host_gpus` False, where the CPU images run): the
# CPU images serve on the CPU, and their training ranks talk over gloo, not NCCL. With GPUs: `--gpus N`.
GPU_RESOURCE = "nvidia.com/gpu"
CPU_HOST_IGNORED = {GPU_RESOURCE}
CONTAINER_IGNORED = {
    "imagePullPolicy",
    "startupProbe",  # the tests wait for gRPC health SERVING themselves
    "readinessProbe",
    "livenessProbe",
}
# What is translated, by where it appears.
POD_FIELDS = {"containers", "initContainers", "volumes", "securityContext", "terminationGracePeriodSeconds"}
POD_FIELDS |= {"automountServiceAccountToken", "enableServiceLinks"}  # both must be false (checked)
POD_FIELDS |= {"runtimeClassName", "subdomain"}  # only RUNTIME_CLASSES_IGNORED; subdomain: its headless Service's names
JOB_FIELDS = {"restartPolicy"}  # a Job's pod runs once here: Never and OnFailure alike
# A Job's own spec: completions and parallelism (one pod, or one per index of an Indexed Job, all at once).
JOB_SPEC_FIELDS = {"template", "completionMode", "completions", "parallelism"}
JOB_SPEC_IGNORED = {
    "backoffLimit",  # each pod runs once here: the caller sees its exit code
    "activeDeadlineSeconds",  # the caller's timeout bounds a run
    "ttlSecondsAfterFinished",  # the caller removes what it ran
}
# What the Job controller puts on an Indexed Job's pods (as an annotation and, since Kubernetes 1.28, a label).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
CONTAINER_FIELDS = {"name", "image", "command", "args", "ports", "env", "envFrom", "resources", "securityContext"}
CONTAINER_FIELDS |= {"volumeMounts", "lifecycle"}  # lifecycle: preStop only, which runs when a pod stops
POD_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy", "supplementalGroups"}
POD_SECURITY |= {"seccompProfile"}
CONTAINER_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "readOnlyRootFilesystem"}
CONTAINER_SECURITY |= {"allowPrivilegeEscalation", "capabilities", "privileged"}
# A Localhost seccomp profile is a file under the node's kubelet seccomp directory. The chart's DaemonSet writes the
# keys of its ConfigMap "<fullname>-seccomp" to <kubelet root>/seccomp/thinkmesh/ on every node, so
# `localhostProfile: thinkmesh/<key>` is that ConfigMap's <key>, read here from the same rendering.
SECCOMP_PROFILE_DIRECTORY = "thinkmesh"
SECCOMP_CONFIGMAP_SUFFIX = "-seccomp"
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
# Kubernetes' dependent environment variables: $(NAME) is replaced when NAME is defined, $$ is an escaped $.
_VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
# The downward API's fieldPath into the pod's own labels or annotations: metadata.annotations['<key>'].
_METADATA_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


class Untranslated(Exception):
    """The pod spec has something this kubelet cannot give Docker."""


def quantity_bytes(quantity: str | int) -> int:
    """A Kubernetes quantity ("2Gi", "256Mi", "768M") in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kMGT]i?)?", str(quantity))
    if not match:
        raise Untranslated(f"not a Kubernetes quantity: {quantity!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def expand(text: str, env: Mapping[str, str]) -> str:
    """$(NAME) references as the kubelet expands them in env values, command and args."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _VARIABLE.sub(replace, str(text))


def _only(where: str, obj: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise Untranslated(f"{where}: {', '.join(unknown)} not translated to docker run")


@dataclass(frozen=True)
class Pod:
    """One replica of a workload, in `docker run` terms."""

    name: str  # its hostname, as in the cluster: its metadata.name, but for an Indexed Job's pod `<job>-<index>`
    # The app.kubernetes.io/component label; an init container's: <component>-<container>; an Indexed Job's pod's:
    # <component>-<index> (what `Session` names the container after).
    component: str
    image: str
    options: tuple[str, ...]  # every `docker run` option but name, network and aliases
    entrypoint: str | None  # the container's `command[0]`; None keeps the image's
    args: tuple[str, ...]
    aliases: tuple[str, ...]  # the DNS names the pod answers to on the network
    ports: dict[str, int]  # containerPort by name
    volumes: dict[str, int | None]  # the Docker volumes for its claims → the fsGroup to prepare each for
    # The pod's init containers, in order: each runs to completion (`Session.run_once`) before this one starts.
    init: tuple[Pod, ...] = ()


@dataclass(frozen=True)
class _PodMeta:
    """Who one pod is, as its controller makes it: what the downward API and its DNS names read."""

    name: str
    hostname: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    files: str  # the directory under `scratch` for its Secret and ConfigMap volumes
    component: str


@dataclass
class Kubelet:
    manifests: Rendered
    scratch: Path  # where Secret and ConfigMap volumes are written
    volume_prefix: str  # a claim X is the Docker volume `<volume_prefix>-X`
    host_cpus: int
    # rendered image → the local image run instead
    images: Mapping[str, str]
    # Whether Docker can give containers GPUs (`--gpus`); without, nvidia.com/gpu is ignored (CPU_HOST_IGNORED).
    host_gpus: bool = True

    def pods(self, workload: dict[str, Any]) -> tuple[Pod, ...]:
        """The pods the workload's controller starts together: an Indexed Job's, one per completion index; else its
        one pod."""
        indexes = self._completion_indexes(workload)
        if indexes is None:
            return (self.pod(workload),)
        return tuple(self.pod(workload, index) for index in indexes)

    def pod(self, workload: dict[str, Any], index: int | None = None) -> Pod:
        """A Deployment's, StatefulSet's or Job's pod: its one container, and its init containers to run first. An
        Indexed Job's pod of completion `index` (which it must be given)."""
        kind, name = workload["kind"], workload["metadata"]["name"]
        template = workload["spec"]["template"]
        spec = template["spec"]
        labels = dict(template["metadata"]["labels"])
        annotations = dict(template["metadata"].get("annotations") or {})
        namespace = workload["metadata"]["namespace"]
        where = f"{kind} {name}"
        _only(where, spec, POD_FIELDS | POD_IGNORED | (JOB_FIELDS if kind == "Job" else set()))
        if spec.get("automountServiceAccountToken", True):
            raise Untranslated(f"{where}: a service account token would be mounted; there is no API server here")
        if spec.get("enableServiceLinks", True):
            raise Untranslated(f"{where}: service links (one env variable per Service) are not translated")
        if len(spec["containers"]) != 1:
            raise Untranslated(f"{where}: {len(spec['containers'])} containers; one is translated")
        if "runtimeClassName" in spec and spec["runtimeClassName"] not in RUNTIME_CLASSES_IGNORED:
            raise Untranslated(
                f"{where}: runtimeClassName not translated: {spec['runtimeClassName']} (an isolation layer Docker "
                f"does not give here; only {', '.join(sorted(RUNTIME_CLASSES_IGNORED))} is known)"
            )

        indexes = self._completion_indexes(workload)
        if indexes is not None:
            if index not in indexes:
                raise ValueError(f"{where}: an Indexed Job's pod is one of the indexes {indexes}, not {index!r}")
            # The Job controller's: the index on the pod, its hostname <job>-<index>, its name that plus a suffix.
            labels[COMPLETION_INDEX] = annotations[COMPLETION_INDEX] = str(index)
            hostname = f"{name}-{index}"
            pod_name = f"{hostname}-{secrets.token_hex(3)}"
            aliases = []
        elif index is not None:
            raise ValueError(f"{where}: not an Indexed Job; it has no index {index}")
        elif kind == "StatefulSet":
            pod_name = hostname = f"{name}-0"
            aliases = [f"{pod_name}.{workload['spec']['serviceName']}.{namespace}.svc.{CLUSTER_DOMAIN}"]
        else:
            pod_name = hostname = f"{name}-{secrets.token_hex(3)}"
            aliases = []
        for service in self.manifests.of_kind("Service"):
            selector = service["spec"].get("selector") or {}
            if selector and selector.items() <= labels.items():
                svc = service["metadata"]["name"]
                aliases += [svc, f"{svc}.{service['metadata']['namespace']}.svc.{CLUSTER_DOMAIN}"]
        if "subdomain" in spec:
            aliases += self._subdomain_names(where, spec["subdomain"], hostname, namespace, labels)

        component = template["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = _PodMeta(
            name=pod_name,
            hostname=hostname,
            namespace=namespace,
            labels=labels,
            annotations=annotations,
            # Where its Secret and ConfigMap volumes are written: the workload's, or its index's own.
            files=name if index is None else hostname,
            component=component if index is None else f"{component}-{index}",
        )
        init = tuple(
            self._container(where, workload, container, pod, (), init=True)
            for container in spec.get("initContainers", [])
        )
        (container,) = spec["containers"]
        return replace(self._container(where, workload, container, pod, tuple(aliases)), init=init)

    def _completion_indexes(self, workload: dict[str, Any]) -> range | None:
        """An Indexed Job's completion indexes, all of which run at once here; None for any other workload. Checks a
        Job's own spec."""
        if workload["kind"] != "Job":
            return None
        spec = workload["spec"]
        where = f"Job {workload['metadata']['name']}"
        _only(where, spec, JOB_SPEC_FIELDS | JOB_SPEC_IGNORED)
        mode = spec.get("completionMode", "NonIndexed")
        completions, parallelism = spec.get("completions", 1), spec.get("parallelism", 1)
        if mode == "NonIndexed":
            if (completions, parallelism) != (1, 1):
                raise Untranslated(f"{where}: {completions} completions, parallelism {parallelism}; one pod runs here")
            return None
        if mode != "Indexed":
            raise Untranslated(f"{where}: completionMode {mode}")
        if parallelism < completions:
            # A training stage's ranks must all run at once; so do they here.
            raise Untranslated(f"{where}: parallelism {parallelism} < {completions} completions: all run at once here")
        return range(completions)

    def _subdomain_names(
        self, where: str, subdomain: str, hostname: str, namespace: str, labels: Mapping[str, str]
    ) -> list[str]:
        """`<hostname>.<subdomain>` and its fully qualified name, which cluster DNS gives a pod with a subdomain when a
        headless Service of that name selects it. The short name is an alias of its own: Docker's DNS has no search
        path, where a pod's resolv.conf searches `<namespace>.svc.<cluster domain>` first."""
        service = self.manifests.find("Service", subdomain)
        selector = (service or {}).get("spec", {}).get("selector") or {}
        if (
            service is None
            or service["metadata"].get("namespace") != namespace
            or service["spec"].get("clusterIP") != "None"
            or not selector
            or not selector.items() <= labels.items()
        ):
            raise Untranslated(
                f"{where}: subdomain {subdomain}: no headless Service {subdomain} in {namespace} selects the pod "
                f"(give it to the Kubelet's manifests), so {hostname}.{subdomain} would not resolve"
            )
        return [f"{hostname}.{subdomain}", f"{hostname}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}"]

    def _container(
        self,
        where: str,
        workload: dict[str, Any],
        container: dict[str, Any],
        pod: _PodMeta,
        aliases: tuple[str, ...],
        *,
        init: bool = False,
    ) -> Pod:
        spec = workload["spec"]["template"]["spec"]
        where = f"{where}, {'init container' if init else 'container'} {container['name']}"
        _only(where, container, CONTAINER_FIELDS | CONTAINER_IGNORED)
        # preStop runs when a pod is stopped; the tests remove their containers instead.
        _only(f"{where}, lifecycle", container.get("lifecycle", {}), {"preStop"})

        env = self._env(where, container, pod)
        pod_security = spec.get("securityContext", {})
        options = [*self._security(where, pod_security, container.get("securityContext", {}))]
        options += self._resources(where, container.get("resources", {}))
        if "terminationGracePeriodSeconds" in spec:
            options += ["--stop-timeout", str(spec["terminationGracePeriodSeconds"])]
        mounts, volumes = self._volumes(where, workload, pod.files, container, pod_security.get("fsGroup"))
        options += mounts
        ports = {}
        for port in container.get("ports", []):
            _only(f"{where}, port", port, {"name", "containerPort", "protocol"})
            if port.get("protocol", "TCP") != "TCP":
                raise Untranslated(f"{where}: port {port} is not TCP")
            ports[port.get("name", str(port["containerPort"]))] = int(port["containerPort"])
        for key, value in env.items():
            options += ["--env", f"{key}={value}"]

        # command replaces the image's ENTRYPOINT, args its CMD; `docker run --entrypoint` takes one word.
        command = [expand(word, env) for word in container.get("command", [])]
        args = [expand(word, env) for word in container.get("args", [])]
        image = container["image"]
        return Pod(
            name=pod.hostname,
            component=f"{pod.component}-{container['name']}" if init else pod.component,
            image=self.images.get(image, image),
            options=tuple(["--hostname", pod.hostname, *options]),
            entrypoint=command[0] if command else None,
            args=tuple([*command[1:], *args]),
            aliases=aliases,
            ports=ports,
            volumes=volumes,
        )

    # --- environment ------------------------------------------------------------------------------------------

    def _data(self, kind: str, name: str, optional: bool | None, where: str) -> dict[str, str] | None:
        """A rendered ConfigMap's or Secret's data, decoded; None for a missing optional one."""
        found = self.manifests.find(kind, name)
        if found is None:
            if optional:
                return None
            raise Untranslated(f"{where}: no {kind} {name} in the rendered chart")
        binary = "data" if kind == "Secret" else "binaryData"
        data = {k: base64.b64decode(v).decode() for k, v in (found.get(binary) or {}).items()}
        data.update({k: str(v) for k, v in (found.get("stringData" if kind == "Secret" else "data") or {}).items()})
        return data

    def _env(self, where: str, container: dict[str, Any], pod: _PodMeta) -> dict[str, str]:
        """envFrom first, then env in order (a later name wins), as the kubelet builds it."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            _only(f"{where}, envFrom", source, {"configMapRef", "secretRef", "prefix"})
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            ref = source["configMapRef" if kind == "ConfigMap" else "secretRef"]
            found = self._data(kind, ref["name"], ref.get("optional"), where) or {}
            env.update({source.get("prefix", "") + k: v for k, v in found.items()})
        for var in container.get("env", []):
            _only(f"{where}, env {var['name']}", var, {"name", "value", "valueFrom"})
            if "valueFrom" not in var:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[var["name"]] = self._field(f"{where}, env {var['name']}", source["fieldRef"], pod)
                continue
            kind = "ConfigMap" if "configMapKeyRef" in source else "Secret"
            ref = source.get("configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef")
            if ref is None:
                raise Untranslated(f"{where}, env {var['name']}: valueFrom {sorted(source)}")
            data = self._data(kind, ref["name"], ref.get("optional"), where)
            if data is not None and ref["key"] in data:
                env[var["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                raise Untranslated(f"{where}, env {var['name']}: no key {ref['key']} in {kind} {ref['name']}")
        return env

    @staticmethod
    def _field(where: str, ref: Mapping[str, Any], pod: _PodMeta) -> str:
        """The downward API's value of a fieldRef: the pod's own name, namespace, labels and annotations are known
        before it starts (an Indexed Job's completion index among them); its IP and node are not."""
        _only(f"{where}, fieldRef", ref, {"fieldPath", "apiVersion"})
        path = ref["fieldPath"]
        fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace}
        if path in fields:
            return fields[path]
        match = _METADATA_FIELD.fullmatch(path)
        found = getattr(pod, match.group(1)) if match else {}
        if not match or match.group(2) not in found:
            # The API server would give an empty value for a key the pod lacks; here that is a mistake to see.
            raise Untranslated(f"{where}: fieldRef {path}")
        return str(found[match.group(2)])

    # --- security ---------------------------------------------------------------------------------------------

    def _security(self, where: str, pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        """The pod's and the container's securityContext (the container's wins) as `docker run` options."""
        _only(f"{where}, pod securityContext", pod, POD_SECURITY)
        _only(f"{where}, securityContext", container, CONTAINER_SECURITY)
        merged = {**pod, **container}
        options = []
        if "runAsUser" in merged:
            options += ["--user", f"{merged['runAsUser']}:{merged.get('runAsGroup', 0)}"]
        elif merged.get("runAsNonRoot") or "runAsGroup" in merged:
            raise Untranslated(f"{where}: runAsNonRoot/runAsGroup without runAsUser (the image's user) is not checked")
        if merged.get("runAsNonRoot") and merged["runAsUser"] == 0:
            raise Untranslated(f"{where}: runAsNonRoot with runAsUser 0: the kubelet would refuse to start it")
        # The kubelet adds fsGroup and the supplemental groups to every container's groups.
        for group in [*([pod["fsGroup"]] if "fsGroup" in pod else []), *pod.get("supplementalGroups", [])]:
            options += ["--group-add", str(group)]
        # fsGroupChangePolicy: every volume here is new, so OnRootMismatch and Always both change it once.
        if container.get("readOnlyRootFilesystem"):
            options.append("--read-only")
        if container.get("allowPrivilegeEscalation") is False:
            options += ["--security-opt", "no-new-privileges"]
        if container.get("privileged"):
            options.append("--privileged")
        capabilities = container.get("capabilities", {})
        _only(f"{where}, capabilities", capabilities, {"drop", "add"})
        options += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
        options += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]
        profile = merged.get("seccompProfile", {"type": "RuntimeDefault"})
        _only(f"{where}, seccompProfile", profile, {"type", "localhostProfile"})
        seccomp = profile["type"]
        if seccomp == "Unconfined":
            options += ["--security-opt", "seccomp=unconfined"]
        elif seccomp == "Localhost":
            path = str(profile.get("localhostProfile", ""))
            directory, _, key = path.rpartition("/")
            if directory != SECCOMP_PROFILE_DIRECTORY or not key:
                raise Untranslated(
                    f"{where}: localhostProfile {path!r}: only {SECCOMP_PROFILE_DIRECTORY}/<key> is known (the keys of "
                    f"the chart's ConfigMap <fullname>{SECCOMP_CONFIGMAP_SUFFIX}, which it installs on the nodes)"
                )
            found = [
                config_map
                for config_map in self.manifests.of_kind("ConfigMap")
                if config_map["metadata"]["name"].endswith(SECCOMP_CONFIGMAP_SUFFIX)
                and key in (config_map.get("data") or {})
            ]
            if len(found) != 1:
                names = sorted(config_map["metadata"]["name"] for config_map in found)
                raise Untranslated(
                    f"{where}: localhostProfile {path}: {len(found)} rendered ConfigMaps "
                    f"<fullname>{SECCOMP_CONFIGMAP_SUFFIX} with key {key} {names}; the file the nodes get comes from "
                    "exactly one"
                )
            # The node's file, as the DaemonSet writes it; Docker reads it when the container is created.
            file = self.scratch / "seccomp" / directory / key
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(found[0]["data"][key])
            options += ["--security-opt", f"seccomp={file}"]
        elif seccomp != "RuntimeDefault":  # Docker's default profile is the runtime default (containerd's too)
            raise Untranslated(f"{where}: seccompProfile {seccomp}")
        return options

    def _resources(self, where: str, resources: dict[str, Any]) -> list[str]:
        """Limits as cgroup limits; requests only place pods, and there is one host."""
        _only(f"{where}, resources", resources, {"limits", "requests"})
        limits = resources.get("limits", {})
        _only(f"{where}, resources.limits", limits, {"cpu", "memory", GPU_RESOURCE})
        if not self.host_gpus:
            limits = {name: amount for name, amount in limits.items() if name not in CPU_HOST_IGNORED}
        options = []
        if "cpu" in limits:
            # Docker refuses more CPUs than the host has; a limit above that limits nothing anyway.
            options += ["--cpus", f"{min(cpu_cores(limits['cpu']), self.host_cpus):g}"]
        if "memory" in limits:
            memory = str(quantity_bytes(limits["memory"]))
            options += ["--memory", memory, "--memory-swap", memory]  # no swap, as on a kubelet's node
        if GPU_RESOURCE in limits:
            options += ["--gpus", str(limits[GPU_RESOURCE])]
        return options

    # --- volumes ----------------------------------------------------------------------------------------------

    def _volumes(
        self, where: str, workload: dict[str, Any], files: str, container: dict[str, Any], fs_group: int | None
    ) -> tuple[list[str], dict[str, int | None]]:
        """The container's volumeMounts as mounts, and the Docker volumes they need (→ fsGroup)."""
        sources = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        # A StatefulSet's volumeClaimTemplates: its pod N mounts the claim <template>-<name>-N.
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            claim_name = f"{claim['metadata']['name']}-{workload['metadata']['name']}-0"
            sources[claim["metadata"]["name"]] = {"persistentVolumeClaim": {"claimName": claim_name}}
        options: list[str] = []
        volumes: dict[str, int | None] = {}
        for mount in container.get("volumeMounts", []):
            _only(f"{where}, volumeMount {mount['name']}", mount, {"name", "mountPath", "readOnly"})
            path, read_only = mount["mountPath"], bool(mount.get("readOnly"))
            source = sources.get(mount["name"])
            if source is None:
                raise Untranslated(f"{where}: volumeMount {mount['name']} has no volume")
            kinds = sorted(set(source) - {"name"})
            if len(kinds) != 1:
                raise Untranslated(f"{where}: volume {mount['name']} is {kinds}")
            kind, spec = kinds[0], source[kinds[0]] or {}
            if kind == "emptyDir":
                _only(f"{where}, emptyDir {mount['name']}", spec, {"medium", "sizeLimit"})
                if spec.get("medium", "") not in ("", "Memory"):
                    raise Untranslated(f"{where}: emptyDir medium {spec['medium']}")
                # A tmpfs either way (a disk emptyDir costs memory here), bounded by the sizeLimit, world-writable
                # like the kubelet's.
                size = f",size={quantity_bytes(spec['sizeLimit'])}" if "sizeLimit" in spec else ""
                options += ["--tmpfs", f"{path}:{'ro' if read_only else 'rw'},exec{size},mode=0777"]
            elif kind == "persistentVolumeClaim":
                _only(f"{where}, claim {mount['name']}", spec, {"claimName", "readOnly"})
                volume = f"{self.volume_prefix}-{spec['claimName']}"
                volumes[volume] = fs_group
                ro = ":ro" if read_only or spec.get("readOnly") else ""
                options += ["--volume", f"{volume}:{path}{ro}"]
            elif kind in ("secret", "configMap"):
                directory = self._files(where, files, mount["name"], kind, spec, fs_group)
                options += ["--volume", f"{directory}:{path}:ro"]  # the kubelet mounts both read-only
            elif kind == "hostPath":
                # A directory of this host, as on the node (the tests point it at what they made).
                _only(f"{where}, hostPath {mount['name']}", spec, {"path", "type"})
                if spec.get("type", "") not in ("", "Directory"):
                    raise Untranslated(f"{where}: hostPath type {spec['type']}")
                options += ["--volume", f"{spec['path']}:{path}{':ro' if read_only else ''}"]
            else:
                raise Untranslated(f"{where}: {kind} volume {mount['name']}")
        return options, volumes

    def _files(
        self, where: str, owner: str, volume: str, kind: str, spec: dict[str, Any], fs_group: int | None
    ) -> Path:
        """A Secret or ConfigMap volume: a directory with a file per key (or per item), mode and group as the
        kubelet sets them."""
        name_key = "secretName" if kind == "secret" else "name"
        _only(f"{where}, {kind} volume {volume}", spec, {name_key, "items", "defaultMode", "optional"})
        data = self._data("Secret" if kind == "secret" else "ConfigMap", spec[name_key], spec.get("optional"), where)
        directory = self.scratch / owner / volume
        directory.mkdir(parents=True)
        directory.chmod(0o755)
        items = spec.get("items") or [{"key": key, "path": key} for key in data or {}]
        for item in items:
            _only(f"{where}, {kind} volume {volume} item", item, {"key", "path", "mode"})
            if data is None or item["key"] not in data:
                raise Untranslated(f"{where}: no key {item['key']} for volume {volume}")
            file = directory / item["path"]
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(data[item["key"]])
            mode = item.get("mode", spec.get("defaultMode", 0o644))
            if fs_group is not None and os.geteuid() == 0:
                os.chown(file, 0, fs_group)
            elif fs_group is not None:
                # Only root can give the file the pod's group: readable by all instead.
                mode |= 0o444
            file.chmod(mode)
        return directory
