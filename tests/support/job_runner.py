"""A process kubelet: runs the training Jobs created on kmock as local processes, one per pod.

kmock (see tests/integration/trainer/test_kube_rollout.py) is an API server without controllers: a Job created
there never gets a pod. `ProcessKubelet` plays, for the Jobs carrying the training run label in one namespace, the
parts a cluster would:

- the Job controller (or, for a PyTorchJob, the Kubeflow training operator): it watches the Jobs through the API,
  creates a Pod object per index (the controller's labels and completion-index annotation, phase Running, then
  Succeeded or Failed) and writes the Job's status back through the API — active/succeeded/failed counts, the
  completed indexes, and the conditions a real controller sets, with its reasons: Complete, or Failed with
  BackoffLimitExceeded (a failed pod is retried as a new pod until the backoff limit is exceeded) or
  DeadlineExceeded (activeDeadlineSeconds), the pods still running then stopped and deleted. A PyTorchJob's
  replica of restartPolicy Never fails the whole PyTorchJob when one of its pods fails (the operator's
  PyTorchJobFailed, "… is failed because 1 Worker replica(s) failed."); OnFailure restarts the pod in place,
  counted against runPolicy.backoffLimit. A Job that already has an outcome is left alone, as a controller would;
- the kubelet: each pod's container runs as a subprocess — its command ("python" becomes this interpreter) and args
  in the repository root, with os.environ plus the container's env, the downward-API completion index resolved
  to the pod's index — and its output is the pod's log, served at pods/<name>/log;
- cluster DNS and the pod network: PET_MASTER_ADDR becomes 127.0.0.1 and PET_MASTER_PORT a free port of this
  machine (for a PyTorchJob, the PET_* and MASTER_* variables the operator injects);
- the garbage collector: when a Job is deleted its processes are killed and its pods deleted (kmock deletes only
  the named object, whatever the propagation policy).

Switches for the failure paths: `failing` (index → how many of its first pods, counted over every Job of the
same name, exit 1 at once: {1: 1} fails index 1's first pod only, {1: 9} its first nine),
`kill(job, index)` (SIGKILL to a running pod's processes, like a lost node), `unreadable_logs` (indexes whose log
answers 404, like a pod whose node is gone) and `command` (maps the container's argv to what runs instead).

What kmock itself does and does not do, which this is designed around (kmock 0.8): it stores any resource's
objects in memory and serves create (409 on a duplicate), read, list, merge-patch (dicts merged, lists replaced,
also on the /status subresource, which patches the object itself) and delete, and watch streams (ADDED, MODIFIED,
DELETED, existing objects first), for built-in and custom resources alike (a PyTorchJob needs no CRD). It has no
controllers, no garbage collection (propagationPolicy is ignored), no uid, resourceVersion or creationTimestamp,
no admission or schema validation, no label or field selectors (a list returns every object of the namespace),
and no pods/log: GET pods/<name>/log would answer the Pod's JSON, so this class registers a reaction for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kmock import KubernetesEmulator, KubernetesObjectNotFoundError, ResourceInfo, headers, resource, subresource

from services.trainer.training.jobs import COMPLETION_INDEX_FIELD, RUN_LABEL
from support.processes import REPO

JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
PYTORCHJOBS = "/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs"
PODS = "/api/v1/namespaces/{namespace}/pods"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
FAILING = [sys.executable, "-c", "import sys; print('simulated failure of this attempt', flush=True); sys.exit(1)"]


def job_template(
    name: str = "thinkmesh-train", namespace: str = "ml", store: str = "/var/lib/thinkmesh"
) -> dict[str, Any]:
    """A Job template of the shape the chart renders: one container `train` with an image, env, the store volume,
    resources, node selector, tolerations and security context; no command."""
    labels = {"app.kubernetes.io/name": "thinkmesh", "app.kubernetes.io/component": "training"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": labels, "annotations": {"thinkmesh.io/config-checksum": "0123abcd"}},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "thinkmesh-training",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                    "nodeSelector": {"thinkmesh.io/pool": "gpu"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "train",
                            "image": "ghcr.io/thinkmesh/trainer:0.1.0",
                            "env": [
                                {"name": "THINKMESH_STORE", "value": store},
                                {"name": "HF_HOME", "value": "/tmp/hf"},
                            ],
                            "resources": {
                                "requests": {"cpu": "8", "memory": "64Gi"},
                                "limits": {"memory": "64Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": [
                                {"name": "store", "mountPath": store},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "store", "persistentVolumeClaim": {"claimName": "thinkmesh-store"}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


@dataclass
class Pod:
    """One attempt at one index: a Pod object and the process playing its container."""

    name: str
    index: int  # the completion index (Job) or the rank (PyTorchJob)
    attempt: int
    container: str
    image: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None
    exit_code: int | None = None


@dataclass
class JobRun:
    """What the kubelet did for one Job (one generation of a name: a Job deleted and created again is a new run)."""

    kind: str  # "Job" or "PyTorchJob"
    name: str
    pods: list[Pod] = field(default_factory=list)  # every attempt, in start order
    outcome: str | None = None  # "Complete", "Failed: BackoffLimitExceeded", ... once it ended
    collected: bool = False  # its processes killed and pods deleted after the Job was deleted


@dataclass
class _Replica:
    index: int
    pod_template: dict[str, Any]
    container: dict[str, Any]
    extra_env: dict[str, str]
    labels: dict[str, str]
    annotations: dict[str, str]
    pod_name: str
    new_pod_per_attempt: bool  # a Job's pods get a random suffix, one per attempt
    restart_policy: str  # the pod template's (a Job) or the replica spec's (a PyTorchJob)
    replica_type: str = ""  # a PyTorchJob's: Master or Worker


class ProcessKubelet:
    """See the module doc. Use as `async with ProcessKubelet(kmock, "ml", tmp_path / "kubelet") as kubelet:`."""

    def __init__(
        self,
        cluster: KubernetesEmulator,
        namespace: str,
        log_dir: Path,
        *,
        command: Callable[[list[str]], list[str]] | None = None,
        failing: Mapping[int, int] | None = None,
        unreadable_logs: Iterable[int] = (),
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_dir = log_dir
        self.command = command
        self.failing = dict(failing or {})
        self.unreadable_logs = set(unreadable_logs)
        self.runs: dict[str, list[JobRun]] = {}  # by Job name, oldest first
        self._tasks: dict[str, asyncio.Task[None]] = {}  # the running Job of each name
        self._watches: list[asyncio.Task[None]] = []
        self._collectors: list[asyncio.Task[None]] = []
        self._pods: dict[str, Pod] = {}

    async def __aenter__(self) -> ProcessKubelet:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Known resources: kmock answers a list of an unknown one (no object created yet) with 404.
        for key, kind in (
            ("batch/v1/jobs", "Job"),
            ("kubeflow.org/v1/pytorchjobs", "PyTorchJob"),
            ("v1/pods", "Pod"),
            ("v1/services", "Service"),
        ):
            self.cluster.resources[key] = ResourceInfo(kind=kind, namespaced=True, subresources={"status"})
        (
            self.cluster["get", resource("", "v1", "pods"), subresource("log")]
            << headers({"Content-Type": "text/plain"})
            << self._serve_log
        )
        for path, kind in ((JOBS, "Job"), (PYTORCHJOBS, "PyTorchJob")):
            ready = asyncio.Event()
            self._watches.append(asyncio.create_task(self._watch(path.format(namespace=self.namespace), kind, ready)))
            await asyncio.wait_for(ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._watches:
            task.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._watches, *self._tasks.values(), *self._collectors, return_exceptions=True)
        for pod in self._pods.values():  # a Job never deleted: its processes still go
            _kill(pod)
            if pod.process is not None:
                await pod.process.wait()

    # What tests look at and do.

    def latest(self, job: str) -> JobRun:
        return self.runs[job][-1]

    async def wait_running(self, job: str, count: int, timeout: float = 30.0) -> list[Pod]:
        """The `count` pods of the latest run of `job`, once each has a running process."""

        def running() -> list[Pod]:
            pods = self.runs.get(job, [JobRun("", "")])[-1].pods
            return [p for p in pods if p.process is not None and p.exit_code is None]

        await _until(lambda: len(running()) >= count, timeout, f"{count} running pods of {job}")
        return running()

    async def wait_collected(self, job: str, timeout: float = 30.0) -> None:
        """Until the latest run of the (deleted) Job `job` has its processes killed and pods deleted."""
        await _until(lambda: self.latest(job).collected, timeout, f"{job} garbage-collected")

    def kill(self, job: str, index: int) -> None:
        """SIGKILL to the running processes of `job`'s pod `index` (a lost node): the pod fails."""
        for pod in self.latest(job).pods:
            if pod.index == index and pod.exit_code is None:
                _kill(pod)

    # The watch: a Job appears → run it; a Job is deleted → collect it.

    async def _watch(self, path: str, kind: str, ready: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.cluster.get(path, params={"watch": "true"}, timeout=timeout) as response:
            ready.set()
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    self._on_event(kind, event["type"], event["object"])

    def _on_event(self, kind: str, event: str, job: dict[str, Any]) -> None:
        metadata = job.get("metadata", {})
        name = metadata.get("name", "")
        if RUN_LABEL not in (metadata.get("labels") or {}) or metadata.get("namespace") != self.namespace:
            return
        if event == "ADDED" and name not in self._tasks and _outcome(kind, job) is None:
            run = JobRun(kind, name)
            self.runs.setdefault(name, []).append(run)
            self._tasks[name] = asyncio.create_task(self._run(run, job))
        elif event == "DELETED" and name in self._tasks:
            task = self._tasks.pop(name)
            task.cancel()
            self._collectors.append(asyncio.create_task(self._collect(self.latest(name), task)))

    async def _collect(self, run: JobRun, task: asyncio.Task[None]) -> None:
        """What the garbage collector does once a Job is deleted: its pods go, their processes with them."""
        await asyncio.gather(task, return_exceptions=True)  # a Job still running has killed its processes
        for pod in run.pods:
            _kill(pod)
            if pod.process is not None:
                await pod.process.wait()
            await self.cluster.delete(f"{PODS.format(namespace=self.namespace)}/{pod.name}")
        run.collected = True

    # The controller: pods for every index, retries, deadline, status.

    async def _run(self, run: JobRun, job: dict[str, Any]) -> None:
        replicas, backoff_limit, deadline_s = self._replicas(run.kind, job)
        port = _free_port()
        loop = asyncio.get_running_loop()
        deadline = None if deadline_s is None else loop.time() + deadline_s
        started = _now()
        active: dict[asyncio.Task[int], tuple[Pod, _Replica]] = {}
        succeeded: set[int] = set()
        failed = 0
        try:
            for replica in replicas:
                pod = await self._start(run, replica, 0, port)
                active[asyncio.create_task(_exit_code(pod))] = (pod, replica)
            await self._status(run, started, len(active), succeeded, failed)
            while active:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(active, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    await self._fail(run, active, started, succeeded, failed, *_deadline_exceeded(run))
                    return
                for task in done:
                    pod, replica = active.pop(task)
                    pod.exit_code = task.result()
                    await self._pod_phase(pod, "Succeeded" if pod.exit_code == 0 else "Failed")
                    if pod.exit_code == 0:
                        succeeded.add(pod.index)
                        continue
                    failed += 1
                    if run.kind == "PyTorchJob" and replica.restart_policy == "Never":
                        why = f"PyTorchJob {run.name} is failed because 1 {replica.replica_type} replica(s) failed."
                        await self._fail(run, active, started, succeeded, failed, "PyTorchJobFailed", why)
                        return
                    if failed > backoff_limit:
                        await self._fail(run, active, started, succeeded, failed, *_backoff_limit_exceeded(run))
                        return
                    retry = await self._start(run, replica, pod.attempt + 1, port)
                    active[asyncio.create_task(_exit_code(retry))] = (retry, replica)
                await self._status(run, started, len(active), succeeded, failed)
            run.outcome = "Complete"
            await self._status(run, started, 0, succeeded, failed, outcome=("Complete", "", ""))
        except asyncio.CancelledError:  # the Job was deleted, or the kubelet stops
            for task, (pod, _) in active.items():
                _kill(pod)
                task.cancel()
            raise

    def _replicas(self, kind: str, job: dict[str, Any]) -> tuple[list[_Replica], int, float | None]:
        """The pods to run (index, template, env the controller adds), the backoff limit and the deadline."""
        name = job["metadata"]["name"]
        spec = job["spec"]
        if kind == "Job":
            template = spec["template"]
            completions = spec.get("completions") or 1
            replicas = []
            for index in range(completions):
                replicas.append(
                    _Replica(
                        index=index,
                        pod_template=template,
                        container=_container(template, "train"),
                        extra_env={"JOB_COMPLETION_INDEX": str(index)},
                        labels={
                            "batch.kubernetes.io/job-name": name,
                            "job-name": name,
                            COMPLETION_INDEX: str(index),
                        },
                        annotations={COMPLETION_INDEX: str(index)},
                        pod_name=f"{name}-{index}",
                        new_pod_per_attempt=True,
                        restart_policy=template["spec"].get("restartPolicy", "Always"),
                    )
                )
            return replicas, spec.get("backoffLimit", 6), spec.get("activeDeadlineSeconds")
        # A PyTorchJob: Master is rank 0, Worker i is rank i + 1; the operator's environment.
        specs = spec["pytorchReplicaSpecs"]
        nnodes = sum(s.get("replicas", 1) for s in specs.values())
        nproc = spec.get("nprocPerNode", "1")
        replicas = []
        rank = 0
        for replica_type in ("Master", "Worker"):
            if replica_type not in specs:
                continue
            template = specs[replica_type]["template"]
            for index in range(specs[replica_type].get("replicas", 1)):
                operator_env = {
                    "PET_NNODES": str(nnodes),
                    "PET_NPROC_PER_NODE": nproc,
                    "PET_NODE_RANK": str(rank),
                    "WORLD_SIZE": str(nnodes * int(nproc)),
                    "RANK": str(rank),
                }
                pod_name = f"{name}-{replica_type.lower()}-{index}"
                replicas.append(
                    _Replica(
                        index=rank,
                        pod_template=template,
                        container=_container(template, "pytorch"),
                        extra_env=operator_env,
                        labels={
                            "training.kubeflow.org/job-name": name,
                            "training.kubeflow.org/replica-type": replica_type.lower(),
                            "training.kubeflow.org/replica-index": str(index),
                        },
                        annotations={},
                        pod_name=pod_name,
                        new_pod_per_attempt=False,  # OnFailure: the same pod's container again
                        restart_policy=specs[replica_type].get("restartPolicy", "OnFailure"),
                        replica_type=replica_type,
                    )
                )
                rank += 1
        policy = spec.get("runPolicy", {})
        return replicas, policy.get("backoffLimit", 6), policy.get("activeDeadlineSeconds")

    async def _start(self, run: JobRun, replica: _Replica, attempt: int, port: int) -> Pod:
        suffix = f"-{secrets.token_hex(3)[:5]}" if replica.new_pod_per_attempt else ""
        name = f"{replica.pod_name}{suffix}"
        container = replica.container
        env = dict(os.environ)
        for variable in container.get("env") or []:
            env[variable["name"]] = self._value(variable, replica.index, name)
        env.update(replica.extra_env)
        # What DNS and the pod network would do: every pod reaches the rendezvous on this machine.
        env.update(
            PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if argv[:1] == ["python"]:
            argv[0] = sys.executable
        if self.command is not None:
            argv = self.command(argv)
        earlier = sum(1 for r in self.runs[run.name] for p in r.pods if p.index == replica.index)
        if earlier < self.failing.get(replica.index, 0):
            argv = list(FAILING)
        generation = len(self.runs[run.name])  # a PyTorchJob created again has pods of the same names
        pod = Pod(
            name, replica.index, attempt, container["name"], container.get("image", ""), argv, env,
            self.log_dir / f"{name}.{generation}.log",
        )  # fmt: skip
        run.pods.append(pod)
        self._pods[name] = pod
        template_metadata = replica.pod_template.get("metadata", {})
        spec = json.loads(json.dumps(replica.pod_template["spec"]))
        if run.kind == "Job" and spec.get("subdomain"):
            spec["hostname"] = f"{run.name}-{replica.index}"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {**template_metadata.get("labels", {}), **replica.labels},
                "annotations": {**template_metadata.get("annotations", {}), **replica.annotations},
            },
            "spec": spec,
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }
        pods = PODS.format(namespace=self.namespace)
        response = await self.cluster.post(pods, json=body)
        if response.status == 409:  # a PyTorchJob's pod restarted in place
            await self._pod_phase(pod, "Running")
        with pod.log.open("ab") as sink:
            pod.process = await asyncio.create_subprocess_exec(
                *argv, cwd=REPO, env=env, stdout=sink, stderr=asyncio.subprocess.STDOUT, start_new_session=True
            )
        return pod

    def _value(self, variable: dict[str, Any], index: int, pod_name: str) -> str:
        if "value" in variable:
            return str(variable["value"])
        field_path = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        resolved = {
            COMPLETION_INDEX_FIELD: str(index),
            "metadata.name": pod_name,
            "metadata.namespace": self.namespace,
            "status.podIP": "127.0.0.1",
        }
        if field_path not in resolved:
            raise NotImplementedError(f"env {variable['name']}: only {sorted(resolved)} are resolved, not {variable}")
        return resolved[field_path]

    async def _fail(
        self,
        run: JobRun,
        active: dict[asyncio.Task[int], tuple[Pod, _Replica]],
        started: str,
        succeeded: set[int],
        failed: int,
        reason: str,
        message: str,
    ) -> None:
        # As the Job controller does: the pods still running are stopped and deleted (their logs go with them);
        # the pods that ended stay until the Job is deleted.
        for task, (pod, _) in list(active.items()):
            _kill(pod)
            pod.exit_code = await task
            await self.cluster.delete(f"{PODS.format(namespace=self.namespace)}/{pod.name}")
        active.clear()
        run.outcome = f"Failed: {reason}"
        await self._status(run, started, 0, succeeded, failed, outcome=("Failed", reason, message))

    async def _pod_phase(self, pod: Pod, phase: str) -> None:
        """The pod's phase, and once it ended its container's exit code and end time, as the kubelet reports them."""
        status: dict[str, Any] = {"phase": phase}
        if pod.exit_code is not None:
            terminated = {
                "exitCode": pod.exit_code if pod.exit_code >= 0 else 128 - pod.exit_code,  # killed by a signal
                "reason": "Completed" if pod.exit_code == 0 else "Error",
                "finishedAt": _now(),
            }
            status["containerStatuses"] = [
                {
                    "name": pod.container,
                    "image": pod.image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ]
        await self.cluster.patch(f"{PODS.format(namespace=self.namespace)}/{pod.name}/status", json={"status": status})

    async def _status(
        self,
        run: JobRun,
        started: str,
        active: int,
        succeeded: set[int],
        failed: int,
        outcome: tuple[str, str, str] | None = None,
    ) -> None:
        """The Job's status as the controller writes it (through the API, on /status)."""
        now = _now()
        if run.kind == "Job":
            status: dict[str, Any] = {
                "startTime": started,
                "active": active,
                "ready": 0,  # a training pod has no readiness probe
                "succeeded": len(succeeded),
                "failed": failed,
                "completedIndexes": _indexes(succeeded),
            }
            if outcome is not None:
                kind, reason, message = outcome
                if kind == "Complete":
                    conditions = [
                        _condition(
                            "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
                        ),
                        _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                    ]
                    status["completionTime"] = now
                else:
                    conditions = [_condition("FailureTarget", reason, message), _condition("Failed", reason, message)]
                status["conditions"] = conditions
            path = JOBS.format(namespace=self.namespace)
        else:
            conditions = [_condition("Created", "PyTorchJobCreated", f"PyTorchJob {run.name} is created.")]
            if outcome is None:
                conditions.append(_condition("Running", "PyTorchJobRunning", f"PyTorchJob {run.name} is running."))
            elif outcome[0] == "Complete":
                conditions.append(
                    _condition("Succeeded", "PyTorchJobSucceeded", f"PyTorchJob {run.name} is successfully completed.")
                )
            else:
                conditions.append(_condition("Failed", outcome[1], outcome[2]))
            status = {"startTime": started, "conditions": conditions}
            path = PYTORCHJOBS.format(namespace=self.namespace)
        await self.cluster.patch(f"{path}/{run.name}/status", json={"status": status})

    # The kubelet's log endpoint.

    def _serve_log(self, request: Any) -> bytes:
        pod = self._pods.get(request.name or "")
        if pod is None or request.namespace != self.namespace or pod.index in self.unreadable_logs:
            raise KubernetesObjectNotFoundError()
        lines = pod.log.read_bytes().splitlines(keepends=True) if pod.log.exists() else []
        tail = request.params.get("tailLines")
        return b"".join(lines[-int(tail) :] if tail else lines)


def _container(pod_template: dict[str, Any], name: str) -> dict[str, Any]:
    containers = pod_template["spec"]["containers"]
    found: dict[str, Any] = next((c for c in containers if c["name"] == name), containers[0])
    return found


def _backoff_limit_exceeded(run: JobRun) -> tuple[str, str]:
    """The Failed condition's reason and message when the backoff limit is exceeded, as the controller words it."""
    if run.kind == "Job":
        return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    return "PyTorchJobFailed", f"Job {run.name} has failed because it has reached the specified backoff limit"


def _deadline_exceeded(run: JobRun) -> tuple[str, str]:
    """The same, past activeDeadlineSeconds."""
    if run.kind == "Job":
        return "DeadlineExceeded", "Job was active longer than specified deadline"
    return "PyTorchJobFailed", f"Job {run.name} has failed because it was active longer than specified deadline"


def _outcome(kind: str, job: dict[str, Any]) -> str | None:
    ends = ("Complete", "Failed") if kind == "Job" else ("Succeeded", "Failed")
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ends and condition.get("status") == "True":
            return str(condition["type"])
    return None


def _condition(kind: str, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _indexes(indexes: set[int]) -> str:
    """The controller's notation for a set of indexes: intervals, e.g. "0-2,5"."""
    parts: list[str] = []
    for index in sorted(indexes):
        if parts and parts[-1].split("-")[-1] == str(index - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{index}"
        else:
            parts.append(str(index))
    return ",".join(parts)


async def _exit_code(pod: Pod) -> int:
    assert pod.process is not None
    return await pod.process.wait()


def _kill(pod: Pod) -> None:
    if pod.process is not None and pod.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it has just exited
            os.killpg(pod.process.pid, signal.SIGKILL)  # its own session: torchrun and every rank it started


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s")
        await asyncio.sleep(0.02)
