"""A training stage as a Kubernetes Job: rendered from the chart's template, created, watched, logged, deleted.

The chart renders one batch/v1 Job (the `<release>-training-job` ConfigMap, mounted at `job_template`) carrying
everything that belongs to the cluster: the image, the store volume, resources, node pool, security context. It
has one container, `train`, and no command. `render_manifests` completes it for one stage, in one of two shapes:

- indexed (no operator needed): an Indexed Job of `job_nodes` pods and a headless Service over them. Each pod
  runs `torchrun`, configured by the PET_* variables it reads: the node rank is the pod's completion index (the
  downward API), the rendezvous is the index-0 pod, reached by its DNS name `<job>-0.<service>` — the Service's
  `publishNotReadyAddresses` publishes it before the pod is ready, which a training pod never is.
- pytorchjob: a Kubeflow PyTorchJob (Master and Workers); the training operator sets the PET_* variables.

`KubeJobLauncher` runs a stage that way, polling the Job and `<out>/progress.json`. It finds the stage's Job by
name first: one still running for the same spec (a trainer restarted mid-stage) is followed, not started twice;
one that completed with its result written is adopted; any other (failed, or for another spec) is deleted and the
stage started again, resuming from its checkpoints. Whatever the outcome, before it returns or raises it writes
every pod's log it can still read to `<out>/logs/attempt-<n>/` (a Job it found ended or another spec's:
`previous/`) and deletes the Job (its pods with it) and the Service: nothing of a stage outlives it, so the GPUs
are free for the next. Only a stopping trainer (KeyboardInterrupt, SystemExit) leaves the Job running, for the
next trainer to follow.

A stage is retried as a whole, never pod by pod. A pod that replaces a failed one cannot join the running torchrun
group: the survivors' next collective fails on the lost peer, the replacement waits for a rendezvous that never
comes, index 0's torchrun never exits, and the Job hangs until its deadline. So the Job retries nothing
(`backoffLimit: 0`; a PyTorchJob's `runPolicy.backoffLimit: 0` and `restartPolicy: Never` for its replicas): the
first failed pod fails the Job, and its other pods are stopped. The launcher then collects the attempt's logs,
deletes the Job, waits until the Job and its pods are gone (the next attempt's pods need their GPUs and DNS names)
and creates it again, up to `job_backoff_limit` more times within what is left of `job_timeout_s`; each attempt
resumes from the stage's checkpoints (the worker finds them in `<out>/checkpoints`). A Job past its deadline or
deleted by someone else is not started again. Each attempt's failure is logged; when the last fails too, the
TrainingFailed names every attempt's reason.

No podFailurePolicy: with `backoffLimit: 0` the first failed pod, whatever its exit code or cause (an eviction, a
lost node), already fails the Job. A FailJob rule on a non-zero exit would add nothing but another reason's name,
and an Ignore rule for disruptions would bring back the replacement of a single pod that breaks the group.

`kubernetes` is imported inside the functions: a trainer-only extra, slow to import (see services/trainer/kube.py).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from services.common.errors import InvalidInput
from services.common.kube import api_client
from services.trainer.training.launch import OnProgress, clear_outcome
from services.trainer.training.settings import TrainingSettings
from services.trainer.training.spec import LOGS_DIR, Progress, TrainingFailed, TrainingResult, TrainingSpec

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, V1Pod

log = logging.getLogger(__name__)

RUN_LABEL = "thinkmesh.io/training-run"  # the Job's name, on the Job, its pods and the Service
STAGE_LABEL = "thinkmesh.io/training-stage"  # the launcher's name for the stage, e.g. "r3-sft"
CONTAINER = "train"  # the template's container
PYTORCH_CONTAINER = "pytorch"  # the name the Kubeflow training operator requires
COMMAND = ["python", "-m", "torch.distributed.run"]
WORKER_MODULE = "services.trainer.training.worker"
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
GPU_RESOURCE = "nvidia.com/gpu"
RENDEZVOUS_PORT_NAME = "rendezvous"
PYTORCHJOB_PORT_NAME = "pytorchjob-port"  # the operator looks the master's port up by this name
DEFAULT_PREFIX = "thinkmesh-train"
# Pod hostnames are `<job>-<index>` and must stay within a DNS label (63): room for a 7-digit index.
MAX_JOB_NAME = 55
# We delete a stage's Job ourselves; the TTL only catches one left behind by a trainer that never came back.
# A day: longer than a trainer's restart, so a restarted trainer still finds a finished Job to adopt.
FINISHED_TTL_S = 24 * 3600
# After the Job's own deadline (activeDeadlineSeconds) the controller fails it within seconds; the launcher waits
# this much longer before it gives up on a Job that never finishes (e.g. no operator acting on a PyTorchJob).
DEADLINE_GRACE_S = 600.0
# How long the API may fail in a row while a stage is watched before the launcher gives up (a control-plane
# upgrade takes minutes; the Job goes on meanwhile).
API_OUTAGE_S = 300.0
# Waiting for a deleted Job's pods to go: their termination grace period, then this for the garbage collector.
DELETION_SLACK_S = 90.0
REQUEST_TIMEOUT_S = 30.0
# A TrainingFailed message quotes the last lines of the logs of a few pods, failed ones first (the rest are in
# <out>/logs): enough lines to get past torchrun's own summary of a failed rank (about 30) to its error.
FAILURE_TAIL_LINES = 50
FAILURE_TAIL_PODS = 2

_PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs")
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def job_name(template: Mapping[str, Any], name: str) -> str:
    """The Job's (and the Service's) name for the stage `name`: `<prefix>-<name>` made a DNS label of at most
    MAX_JOB_NAME characters. The prefix is the template's own name when it has one (a chart that names it after
    its release keeps two releases in one namespace apart), else DEFAULT_PREFIX. A name that had to be changed
    (cut short, other characters) ends in a hash of the original, so two stages never share a Job."""
    prefix = str(template.get("metadata", {}).get("name") or DEFAULT_PREFIX)
    return _dns_label(f"{prefix}-{name}", MAX_JOB_NAME)


def render_manifests(
    template: dict[str, Any], spec_path: str, name: str, settings: TrainingSettings
) -> list[dict[str, Any]]:
    """The objects to create, in order, for the stage `name` whose spec is at `spec_path` (a path on the store
    volume, the same in the trainer and the pods): indexed → [Service, Job]; pytorchjob → [PyTorchJob]."""
    pod = _pod_template(template)
    namespace = settings.job_namespace or str(template.get("metadata", {}).get("namespace") or "")
    if not namespace:
        raise InvalidInput("the training Job needs a namespace (THINKMESH_TRAINER_JOB_NAMESPACE)")
    job = job_name(template, name)
    labels = {RUN_LABEL: job, STAGE_LABEL: _dns_label(name, 63)}
    metadata = copy.deepcopy(template.get("metadata", {}))
    metadata.pop("generateName", None)
    metadata.update(name=job, namespace=namespace, labels={**metadata.get("labels", {}), **labels})
    pod_metadata = pod.setdefault("metadata", {})
    pod_metadata["labels"] = {**pod_metadata.get("labels", {}), **labels}
    args = ["-m", WORKER_MODULE, spec_path]
    port = settings.job_rendezvous_port
    if settings.job_kind == "pytorchjob":
        return [_pytorchjob(metadata, pod, args, settings)]

    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": job, "namespace": namespace, "labels": metadata["labels"]},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {RUN_LABEL: job},
            "ports": [{"name": RENDEZVOUS_PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
    manifest = copy.deepcopy(template)
    manifest["metadata"] = metadata
    manifest["spec"].update(
        completions=settings.job_nodes,
        parallelism=settings.job_nodes,
        completionMode="Indexed",
        backoffLimit=0,  # the launcher restarts the stage as a whole (module doc)
        activeDeadlineSeconds=max(1, math.ceil(settings.job_timeout_s)),
        ttlSecondsAfterFinished=FINISHED_TTL_S,
        template=pod,
    )
    pod["spec"].update(subdomain=job, restartPolicy="Never")
    container = _container(pod["spec"])
    container.update(command=list(COMMAND), args=args)
    _set_env(
        container,
        [
            {"name": "PET_NNODES", "value": str(settings.job_nodes)},
            {"name": "PET_NPROC_PER_NODE", "value": str(settings.job_gpus_per_node)},
            {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX_FIELD}}},
            {"name": "PET_MASTER_ADDR", "value": f"{job}-0.{job}"},
            {"name": "PET_MASTER_PORT", "value": str(port)},
        ],
    )
    _set_gpus(container, settings.job_gpus_per_node)
    _set_port(container, RENDEZVOUS_PORT_NAME, port)
    return [service, manifest]


def load_template(path: str | Path) -> dict[str, Any]:
    """The chart's Job template (YAML) at `path`."""
    import yaml

    try:
        template = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read the training Job template {path}: {exc}") from exc
    if not isinstance(template, dict):
        raise InvalidInput(f"the training Job template {path} is not a YAML mapping")
    return template


class KubeJobLauncher:
    """Runs each stage as a Kubernetes Job (see the module doc); a `Launcher`.

    `client_factory` builds the API client for one run (closed after it); `poll_interval_s` is how often the Job
    and `<out>/progress.json` are read; `timeout_s` bounds one run, every attempt together (default: the stage's
    `job_timeout_s` plus DEADLINE_GRACE_S); `log_lines` is how much of each pod's log is kept."""

    def __init__(
        self,
        settings: TrainingSettings,
        *,
        client_factory: Callable[[], ApiClient] = api_client,
        poll_interval_s: float = 5.0,
        timeout_s: float | None = None,
        log_lines: int = 100_000,
    ) -> None:
        self._settings = settings
        self._client_factory = client_factory
        self._poll_interval_s = poll_interval_s
        self._timeout_s = timeout_s if timeout_s is not None else settings.job_timeout_s + DEADLINE_GRACE_S
        self._log_lines = log_lines

    def run(self, spec: TrainingSpec, *, name: str, on_progress: OnProgress | None = None) -> TrainingResult:
        spec_path = spec.write()
        manifests = render_manifests(load_template(self._settings.job_template), str(spec_path), name, self._settings)
        api = self._client_factory()
        try:
            run = _Run(api, self._settings.job_kind, manifests, spec, self._log_lines)
            return run.run(
                on_progress,
                self._poll_interval_s,
                self._timeout_s,
                budget_s=self._settings.job_timeout_s,
                restarts=self._settings.job_backoff_limit,
            )
        finally:
            api.close()  # type: ignore[no-untyped-call]  # the generated ApiClient.close has no annotations


@dataclass(frozen=True)
class _Outcome:
    succeeded: bool
    reason: str
    restartable: bool = True  # False: the stage is not started again (out of time, deleted by someone)


@dataclass(frozen=True)
class _Cleared:
    """What `_Run._finish` reports for a failure message: the first pod to fail and why (e.g. "; pod x-1-ab3cd
    exited with 137"), and the tails of the pods' logs and whatever could not be done."""

    cause: str
    notes: str


class _Run:
    """One stage's Job, from creation (or adoption) through its attempts to deletion."""

    def __init__(self, api: ApiClient, kind: str, manifests: list[dict[str, Any]], spec: TrainingSpec, log_lines: int):
        from kubernetes import client

        self._api = api
        self._core = client.CoreV1Api(api)
        self._batch = client.BatchV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._pytorchjob = kind == "pytorchjob"
        self._manifests = manifests
        self._job = manifests[-1]
        self._name: str = self._job["metadata"]["name"]
        self._namespace: str = self._job["metadata"]["namespace"]
        self._spec = spec
        self._log_lines = log_lines
        self._what = f"training {self._job['kind']} {self._namespace}/{self._name}"
        self._attempt = 0  # the attempt being watched (1 = the first this launcher created or followed)
        # Deleted pods get their termination grace period (SIGTERM, then SIGKILL), then the garbage collector's lag.
        grace = _pod_spec(self._job).get("terminationGracePeriodSeconds")
        self._deletion_timeout_s = (30.0 if grace is None else float(grace)) + DELETION_SLACK_S

    def run(
        self, on_progress: OnProgress | None, interval_s: float, timeout_s: float, *, budget_s: float, restarts: int
    ) -> TrainingResult:
        """The stage's result, after at most 1 + `restarts` attempts within `budget_s` (the stage's time in all)
        and `timeout_s` (this run's)."""
        now = time.monotonic()
        deadline, budget_end = now + timeout_s, now + budget_s
        failures: list[str] = []  # the reasons of the attempts that failed and were followed by another
        try:
            outcome = self._start_or_adopt()
            while True:
                if outcome is None:
                    outcome = self._watch(on_progress, interval_s, deadline)
                left = budget_end - time.monotonic()
                if outcome.succeeded or not outcome.restartable or len(failures) >= restarts or left < 1:
                    break
                cleared = self._finish()
                failures.append(f"attempt {self._attempt}: {outcome.reason}{cleared.cause}")
                log.warning(
                    "%s: %s; starting the stage again from its checkpoints (restart %d of %d); logs in %s%s",
                    self._what, failures[-1], len(failures), restarts, self._attempt_logs(), cleared.notes,
                )  # fmt: skip
                self._wait_deleted()
                self._create(deadline_s=math.floor(left))
                outcome = None
        except (KeyboardInterrupt, SystemExit):
            # The trainer is stopping: the Job goes on, and the next trainer follows it.
            log.warning("%s left running: the trainer is stopping", self._what)
            raise
        except Exception as exc:
            cleared = self._finish()
            raise TrainingFailed(self._failure(failures, _short(exc) + cleared.cause, cleared.notes)) from exc
        cleared = self._finish()
        result = TrainingResult.read(self._spec.out) if outcome.succeeded else None
        if result is not None:
            if failures:
                log.info("%s: attempt %d succeeded after %s", self._what, self._attempt, "; ".join(failures))
            return result
        reason = outcome.reason if not outcome.succeeded else f"{outcome.reason}, but wrote no result.json"
        if not outcome.succeeded and outcome.restartable and len(failures) < restarts:
            reason += " with no time left for another attempt"
        raise TrainingFailed(self._failure(failures, reason + cleared.cause, cleared.notes))

    def _failure(self, failures: list[str], last: str, notes: str) -> str:
        """The TrainingFailed message: every attempt's reason, the last one's `last`."""
        where = f"logs in {self._logs_dir()}{notes}"
        if not failures:
            return f"{self._what}: {last}; {where}"
        attempts = "".join(f"\n  {failure}" for failure in [*failures, f"attempt {self._attempt}: {last}"])
        return f"{self._what}: {len(failures) + 1} attempts failed:{attempts}\n{where}"

    def _start_or_adopt(self) -> _Outcome | None:
        """Creates the stage's objects, or follows the Job a previous trainer started; an outcome when the Job it
        finds already finished with a result (a trainer restarted between the end and the clean-up)."""
        existing = self._read()
        if existing is not None and _args(existing) != _args(self._job):
            # The name's, but another spec's (a round planned again): not this stage's run to follow or adopt.
            log.info("%s exists for another spec: deleting it and starting again", self._what)
            self._finish(self._logs_dir() / "previous")
            self._wait_deleted()
        elif existing is not None:
            outcome = self._outcome(existing)
            if outcome is None:
                log.info("%s is already running: following it", self._what)
                self._attempt = 1
                self._create_service()  # in case it went missing; an existing one is kept
                return None
            if outcome.succeeded and TrainingResult.read(self._spec.out) is not None:
                log.info("%s already finished: adopting its result", self._what)
                self._attempt = 1
                return outcome
            log.info("%s already ended (%s): deleting it and starting again", self._what, outcome.reason)
            self._finish(self._logs_dir() / "previous")
            self._wait_deleted()
        self._create()
        return None

    def _create(self, deadline_s: int | None = None) -> None:
        """Starts the next attempt: the Service and the Job, whose deadline becomes `deadline_s` when given (what
        is left of the stage's time)."""
        from kubernetes import client

        self._attempt += 1
        clear_outcome(self._spec)  # no result or progress of an earlier attempt may pass for this one's
        if deadline_s is not None:
            policy = self._job["spec"]["runPolicy"] if self._pytorchjob else self._job["spec"]
            policy["activeDeadlineSeconds"] = max(1, deadline_s)
        self._create_service()
        if self._pytorchjob:
            group, version, plural = _PYTORCHJOB
            self._custom.create_namespaced_custom_object(
                group, version, self._namespace, plural, self._job, _request_timeout=REQUEST_TIMEOUT_S
            )
        else:
            job = client.V1Job.from_dict(self._job)
            assert job is not None
            self._batch.create_namespaced_job(self._namespace, job, _request_timeout=REQUEST_TIMEOUT_S)
        log.info("%s created (attempt %d)", self._what, self._attempt)

    def _watch(self, on_progress: OnProgress | None, interval_s: float, deadline: float) -> _Outcome:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        failing_since: float | None = None
        last_step: int | None = None
        while True:
            try:
                job = self._read()
                failing_since = None
            except (ApiException, HTTPError) as exc:
                # The API is out for a moment (an upgrade, a restart); the Job goes on without us. A refusal
                # (403: the Role lacks a verb) is no outage.
                refused = isinstance(exc, ApiException) and 400 <= (exc.status or 0) < 500 and exc.status != 429
                failing_since = failing_since or time.monotonic()
                if refused or time.monotonic() - failing_since > API_OUTAGE_S:
                    raise
                log.warning("%s: cannot read it (%s); retrying", self._what, exc)
                time.sleep(interval_s)
                continue
            progress = Progress.read(self._spec.out)
            if on_progress is not None and progress is not None and progress.step != last_step:
                last_step = progress.step
                on_progress(progress)
            if job is None:
                return _Outcome(False, "it disappeared (deleted by someone else?)", restartable=False)
            outcome = self._outcome(job)
            if outcome is not None:
                return outcome
            if time.monotonic() > deadline:
                return _Outcome(False, "not finished in the time the launcher allows", restartable=False)
            time.sleep(interval_s)

    def _outcome(self, job: dict[str, Any]) -> _Outcome | None:
        """How the Job ended, or None while it runs."""
        status = job.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        success, failure = ("Succeeded", "Failed") if self._pytorchjob else ("Complete", "Failed")
        if failure in conditions:
            condition = conditions[failure]
            reason = condition.get("reason") or "Failed"
            message = condition.get("message")
            # Past its deadline the stage's time is spent (the launcher would give another attempt none).
            restartable = reason != "DeadlineExceeded"
            return _Outcome(False, f"failed: {reason}" + (f" ({message})" if message else ""), restartable)
        completions = job.get("spec", {}).get("completions")
        if success in conditions or (not self._pytorchjob and completions and status.get("succeeded") == completions):
            return _Outcome(True, "completed")
        return None

    def _read(self) -> dict[str, Any] | None:
        """The Job as a plain dict (as the API spells it), or None when there is none."""
        from kubernetes.client.exceptions import ApiException

        try:
            if self._pytorchjob:
                group, version, plural = _PYTORCHJOB
                found = self._custom.get_namespaced_custom_object(
                    group, version, self._namespace, plural, self._name, _request_timeout=REQUEST_TIMEOUT_S
                )
                return cast(dict[str, Any], found)
            job = self._batch.read_namespaced_job(self._name, self._namespace, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        # The API's own spelling (camelCase, no None), the same as a custom object's.
        return cast(dict[str, Any], self._api.sanitize_for_serialization(job))  # type: ignore[no-untyped-call]

    def _create_service(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        for manifest in self._manifests[:-1]:
            service = client.V1Service.from_dict(manifest)
            assert service is not None
            try:
                self._core.create_namespaced_service(self._namespace, service, _request_timeout=REQUEST_TIMEOUT_S)
            except ApiException as exc:
                if exc.status != 409:  # left by an earlier run of this stage: the same Service
                    raise

    def _wait_deleted(self) -> None:
        """Until the deleted Job and its pods are gone: a Job of the same name cannot be created before, and the
        next attempt's pods need the GPUs and the DNS names (`<job>-<index>`, a PyTorchJob's pod names) the last
        attempt's held."""
        deadline = time.monotonic() + self._deletion_timeout_s
        while self._read() is not None or self._pods():
            if time.monotonic() > deadline:
                raise TrainingFailed(f"it or its pods still there {self._deletion_timeout_s:.0f}s after it was deleted")
            time.sleep(1.0)

    def _finish(self, logs: Path | None = None) -> _Cleared:
        """Collects the logs (into `logs`, by default the attempt's), then deletes the Job (its pods with it) and the
        Service; never raises."""
        notes: list[str] = []
        cause = ""
        try:
            cause, tails = self._collect_logs(logs or self._attempt_logs())
            notes += tails
        except Exception as exc:  # the logs are for people; their loss must not hide the stage's outcome
            log.warning("%s: cannot list its pods for their logs: %s", self._what, exc)
            notes.append(f"\nthe pods could not be listed for their logs: {exc}")
        notes += self._delete()
        return _Cleared(cause, "".join(notes))

    def _pods(self) -> list[V1Pod]:
        pods: list[V1Pod] = self._core.list_namespaced_pod(
            self._namespace, label_selector=f"{RUN_LABEL}={self._name}", _request_timeout=REQUEST_TIMEOUT_S
        ).items
        # The selector is the server's filter; checking again costs nothing and keeps emulators that ignore it honest.
        return [p for p in pods if p.metadata and (p.metadata.labels or {}).get(RUN_LABEL) == self._name]

    def _collect_logs(self, directory: Path) -> tuple[str, list[str]]:
        """Writes every pod's log it can read into `directory`; the first pod to fail and why, and the tails of the
        first FAILURE_TAIL_PODS logs (and the pods whose log could not be read), for a failure message."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        pods = sorted(self._pods(), key=_failed_first)
        container = PYTORCH_CONTAINER if self._pytorchjob else CONTAINER
        directory.mkdir(parents=True, exist_ok=True)
        first = pods[0] if pods and _failed(pods[0]) else None
        cause = f"; pod {_pod_name(first)} {_why_failed(first, container)}" if first is not None else ""
        tails: list[str] = []
        quoted = 0
        for pod in pods:
            name = _pod_name(pod)
            try:
                text = self._core.read_namespaced_pod_log(
                    name,
                    self._namespace,
                    container=container,
                    tail_lines=self._log_lines,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
            except (ApiException, HTTPError) as exc:
                log.warning("%s: no log from pod %s: %s", self._what, name, exc)
                tails.append(f"\npod {name}: log unavailable ({_short(exc)})")
                continue
            (directory / f"{name}.log").write_text(text)
            if quoted < FAILURE_TAIL_PODS:
                quoted += 1
                tail = "\n".join(text.splitlines()[-FAILURE_TAIL_LINES:])
                tails.append(f"\n--- pod {name}, last lines:\n{tail}")
        return cause, tails

    def _delete(self) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        deletions: list[tuple[str, Callable[..., object]]] = []
        if self._pytorchjob:
            group, version, plural = _PYTORCHJOB
            delete_job = functools.partial(
                self._custom.delete_namespaced_custom_object, group, version, self._namespace, plural, self._name
            )
        else:
            delete_job = functools.partial(self._batch.delete_namespaced_job, self._name, self._namespace)
        # Background: the Job goes at once, the garbage collector deletes its pods after it.
        deletions.append((self._what, functools.partial(delete_job, propagation_policy="Background")))
        for service in self._manifests[:-1]:
            name = service["metadata"]["name"]
            deletions.append(
                (
                    f"Service {self._namespace}/{name}",
                    functools.partial(self._core.delete_namespaced_service, name, self._namespace),
                )
            )
        notes: list[str] = []
        for what, delete in deletions:
            try:
                delete(_request_timeout=REQUEST_TIMEOUT_S)
            except ApiException as exc:
                if exc.status != 404:
                    log.error("cannot delete %s (delete it by hand; its TTL removes it eventually): %s", what, exc)
                    notes.append(f"\ncannot delete {what}: {_short(exc)}")
            except Exception as exc:
                log.error("cannot delete %s (delete it by hand; its TTL removes it eventually): %s", what, exc)
                notes.append(f"\ncannot delete {what}: {exc}")
        return notes

    def _logs_dir(self) -> Path:
        return self._spec.path(LOGS_DIR)

    def _attempt_logs(self) -> Path:
        return self._logs_dir() / f"attempt-{max(1, self._attempt)}"


def _pod_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the template's pod template, checked: a Job whose pods have one container `train`."""
    if template.get("kind") != "Job" or not isinstance(template.get("spec"), dict):
        raise InvalidInput(f"the training Job template must be a batch/v1 Job, not a {template.get('kind')!r}")
    pod = copy.deepcopy(template["spec"].get("template"))
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        raise InvalidInput("the training Job template has no pod template (spec.template.spec)")
    _container(pod["spec"])
    return pod


def _container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec.get("containers") or []
    found = [c for c in containers if isinstance(c, dict) and c.get("name") == CONTAINER]
    if len(found) != 1:
        names = [c.get("name") for c in containers if isinstance(c, dict)]
        raise InvalidInput(f"the training Job template needs exactly one container named {CONTAINER!r}; has {names}")
    container: dict[str, Any] = found[0]
    return container


def _pod_spec(job: Mapping[str, Any]) -> dict[str, Any]:
    """The training pod's spec of a Job or of a PyTorchJob's Master, as rendered or as the API spells it."""
    spec = job.get("spec") or {}
    if job.get("kind") == "PyTorchJob":
        pod = (spec.get("pytorchReplicaSpecs") or {}).get("Master", {}).get("template", {})
    else:
        pod = spec.get("template", {})
    pod_spec: dict[str, Any] = pod.get("spec") or {}
    return pod_spec


def _args(job: Mapping[str, Any]) -> list[str] | None:
    """The training container's args (the worker and its spec) of a Job or PyTorchJob, as the API spells it."""
    name = PYTORCH_CONTAINER if job.get("kind") == "PyTorchJob" else CONTAINER
    containers = _pod_spec(job).get("containers") or []
    return next((c.get("args") for c in containers if c.get("name") == name), None)


def _pytorchjob(
    metadata: dict[str, Any], pod: dict[str, Any], args: list[str], settings: TrainingSettings
) -> dict[str, Any]:
    pod["spec"].pop("restartPolicy", None)  # the replica spec's policy is the pod's
    pod["spec"].pop("subdomain", None)
    container = _container(pod["spec"])
    container.update(name=PYTORCH_CONTAINER, command=list(COMMAND), args=args)
    # The operator sets PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE and PET_MASTER_ADDR/PORT itself.
    _set_gpus(container, settings.job_gpus_per_node)
    _set_port(container, PYTORCHJOB_PORT_NAME, settings.job_rendezvous_port)

    def replicas(count: int) -> dict[str, Any]:
        # Never: a failed pod fails the PyTorchJob; the launcher restarts the stage as a whole (module doc).
        return {"replicas": count, "restartPolicy": "Never", "template": copy.deepcopy(pod)}

    specs = {"Master": replicas(1)}
    if settings.job_nodes > 1:
        specs["Worker"] = replicas(settings.job_nodes - 1)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(settings.job_gpus_per_node),
            "runPolicy": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": max(1, math.ceil(settings.job_timeout_s)),
                "ttlSecondsAfterFinished": FINISHED_TTL_S,
                # Pods still running when the job ends go at once (their GPUs with them); finished ones stay
                # for their logs until we delete the PyTorchJob.
                "cleanPodPolicy": "Running",
            },
            "pytorchReplicaSpecs": specs,
        },
    }


def _set_env(container: dict[str, Any], variables: list[dict[str, Any]]) -> None:
    """Ours replace the template's variables of the same names; the rest stay, in order."""
    names = {v["name"] for v in variables}
    container["env"] = [v for v in container.get("env") or [] if v.get("name") not in names] + variables


def _set_gpus(container: dict[str, Any], gpus: int) -> None:
    resources = container.setdefault("resources", {})
    for kind in ("requests", "limits"):
        resources.setdefault(kind, {})[GPU_RESOURCE] = str(gpus)


def _set_port(container: dict[str, Any], name: str, port: int) -> None:
    ports = [p for p in container.get("ports") or [] if p.get("name") != name and p.get("containerPort") != port]
    container["ports"] = [*ports, {"name": name, "containerPort": port, "protocol": "TCP"}]


def _dns_label(text: str, limit: int) -> str:
    """`text` as a DNS-1035 label (lower-case letters, digits, '-'; a letter first) of at most `limit` characters;
    when it had to change, a hash of `text` ends it."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not cleaned[:1].isalpha():
        cleaned = f"x-{cleaned}".rstrip("-")
    if cleaned == text and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    label = f"{cleaned[: limit - len(digest) - 1].rstrip('-')}-{digest}"
    assert _DNS_LABEL.fullmatch(label), label
    return label


def _failed_first(pod: V1Pod) -> tuple[bool, float, str]:
    """Failed pods first, the earliest to fail first: its last lines say why (the others often failed because it
    did); then by name."""
    status = pod.status
    ends = [
        s.state.terminated.finished_at.timestamp()
        for s in (status.container_statuses or [] if status else [])
        if s.state and s.state.terminated and s.state.terminated.finished_at
    ]
    return not _failed(pod), min(ends, default=math.inf), _pod_name(pod)


def _failed(pod: V1Pod) -> bool:
    return pod.status is not None and pod.status.phase == "Failed"


def _pod_name(pod: V1Pod) -> str:
    return str(pod.metadata.name if pod.metadata else "")


def _why_failed(pod: V1Pod, container: str) -> str:
    """How a failed pod ended: its training container's exit code, else the pod's own reason (e.g. Evicted)."""
    status = pod.status
    statuses = (status.container_statuses or []) if status else []
    for container_status in statuses:
        terminated = container_status.state.terminated if container_status.state else None
        if container_status.name == container and terminated is not None and terminated.exit_code:
            why = f" ({terminated.reason})" if terminated.reason not in (None, "Error") else ""
            return f"exited with {terminated.exit_code}{why}"
    if status is not None and status.reason:
        return f"failed: {status.reason}" + (f" ({status.message})" if status.message else "")
    return "failed"


def _short(exc: Exception) -> str:
    """An API error as its status and the API server's message, without the headers and the body around it."""
    import json

    from kubernetes.client.exceptions import ApiException

    if not isinstance(exc, ApiException):
        return str(exc)
    try:
        message = json.loads(exc.body or "")["message"]
    except (TypeError, ValueError, KeyError):
        message = ""
    return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
