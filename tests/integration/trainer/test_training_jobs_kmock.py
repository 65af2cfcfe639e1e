"""Training stages as Kubernetes Jobs: the launcher with the official client against kmock's API emulator, and a
process kubelet (tests/support/job_runner.py) running each Job's pods as local processes.

The launcher runs in a thread (`asyncio.to_thread`): kmock and the kubelet run on the test's event loop, which a
synchronous client call on the loop would block. Most tests substitute the pods' command with STAGE, a stand-in
stage that does what the worker does with files (progress, a rank's proof, rank 0's result) without torch; the
last two run the real worker under torchrun, two pods of one process each, on a micro model.

A failed pod fails its Job (backoffLimit 0): the launcher restarts the stage as a whole, as a new Job, up to
job_backoff_limit times. Each attempt's logs go to `<out>/logs/attempt-<n>/`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator, KubernetesError, ReactionMismatchError, name, resource
from kubernetes import client

from services.trainer.data import SFTConfig
from services.trainer.training.jobs import WORKER_MODULE, KubeJobLauncher, load_template, render_manifests
from services.trainer.training.settings import TrainingSettings
from services.trainer.training.spec import (
    Progress,
    Strategy,
    TrainingFailed,
    TrainingResult,
    TrainingSpec,
)
from support.job_runner import PYTORCHJOBS, ProcessKubelet, job_template

pytestmark = pytest.mark.integration

NAMESPACE = "ml"
JOB = "thinkmesh-train-r3-sft"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"

# A stand-in for the worker: argv[1] is the spec. Every rank says who it is and records that it took part; rank 0
# writes three progress steps, waits for the other ranks, then writes the result. While `<out>/hold` exists,
# every rank waits first (a test holds the Job running with it).
STAGE = """
import dataclasses, json, os, sys, time
from pathlib import Path
from services.trainer.training.spec import Progress, TrainingResult, TrainingSpec

spec = TrainingSpec.read(sys.argv[1])
out = spec.out_dir
rank, nodes = int(os.environ["PET_NODE_RANK"]), int(os.environ["PET_NNODES"])
nproc = int(os.environ["PET_NPROC_PER_NODE"])
master = os.environ["PET_MASTER_ADDR"] + ":" + os.environ["PET_MASTER_PORT"]
print(f"rank {rank} of {nodes} nodes x {nproc}, rendezvous {master}", flush=True)
while (out / "hold").exists():
    time.sleep(0.02)
(out / "ranks").mkdir(exist_ok=True)
(out / "ranks" / f"{rank}.json").write_text(json.dumps({"rank": rank}))
if rank == 0:
    for step in (1, 2, 3):
        Progress(step, 3, 1.0 / step).write(out)
        time.sleep(0.15)
    deadline = time.monotonic() + 30
    while len(list((out / "ranks").glob("*.json"))) < nodes and time.monotonic() < deadline:
        time.sleep(0.02)
    ranks = tuple(sorted(int(p.stem) for p in (out / "ranks").glob("*.json")))
    known = {"stage": spec.stage, "out": str(out / "model"), "world_size": nodes * nproc, "steps": 3, "ranks": ranks}
    zeros = {"int": 0, "float": 0.0, "str": "", "bool": False}  # whatever else a result reports
    fields = dataclasses.fields(TrainingResult)
    result = TrainingResult(**{f.name: known.get(f.name, zeros.get(f.type)) for f in fields})
    (out / "result.json").write_text(result.to_json())
print(f"rank {rank} done", flush=True)
"""


def stand_in(argv: list[str]) -> list[str]:
    """The pods' command as the kubelet would run it, checked, then replaced by STAGE on the same spec."""
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"], argv
    assert argv[3:5] == ["-m", WORKER_MODULE], argv
    return [sys.executable, "-c", STAGE, argv[5]]


@pytest.fixture
def template_path(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(job_template(namespace=NAMESPACE, store=str(tmp_path))))  # JSON is YAML
    return path


def settings(template_path: Path, **changes: Any) -> TrainingSettings:
    shape: dict[str, Any] = {"job_nodes": 2, "job_gpus_per_node": 1, "job_backoff_limit": 0, "job_timeout_s": 120}
    return TrainingSettings(
        training_mode="job",
        job_template=str(template_path),
        job_namespace=NAMESPACE,
        **{**shape, **changes},
    )


def stage_spec(tmp_path: Path) -> TrainingSpec:
    """A stage for STAGE, which reads no data; the file exists, as a stage's always does (a launcher may read it)."""
    (tmp_path / "data.jsonl").touch()
    return TrainingSpec(
        stage="sft", data=str(tmp_path / "data.jsonl"), base=str(tmp_path / "base"), out=str(tmp_path / "r3-sft"),
        recipe=SFTConfig(),
    )  # fmt: skip


def launcher(cluster: KubernetesEmulator, training: TrainingSettings, **options: Any) -> KubeJobLauncher:
    def connect() -> client.ApiClient:
        # A private Configuration pointed at the emulator: the client's global default stays untouched.
        return client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))

    return KubeJobLauncher(training, client_factory=connect, poll_interval_s=0.05, **options)


def requests(cluster: KubernetesEmulator, method: str, path: str) -> list[Any]:
    """The API requests of `method` on `path` (a list URL: also its objects and their subresources)."""
    return [r for r in cluster if r.method == method and r.url.path.startswith(path)]


def created_jobs(cluster: KubernetesEmulator) -> list[dict[str, Any]]:
    """The Jobs created, as the launcher sent them, in order."""
    return [r.data for r in sorted(requests(cluster, "POST", JOBS), key=lambda r: r.id)]


def exists(cluster: KubernetesEmulator, plural: str, name: str) -> bool:
    key = (plural, NAMESPACE, name)
    return key in cluster.objects and not cluster.objects[key].deleted


def logs(spec: TrainingSpec, attempt: int = 1) -> dict[str, str]:
    """The pods' logs the launcher collected from the stage's `attempt`, by pod name."""
    return {p.stem: p.read_text() for p in sorted(spec.path("logs").glob(f"attempt-{attempt}/*.log"))}


async def test_a_stage_runs_as_an_indexed_job_and_leaves_nothing_behind(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    steps: list[Progress] = []
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        result = await asyncio.to_thread(
            launcher(kmock, settings(template_path)).run, spec, name="r3-sft", on_progress=steps.append
        )
        await kubelet.wait_collected(JOB)

    assert result == TrainingResult.read(spec.out)
    assert (result.world_size, result.ranks) == (2, (0, 1))
    assert [p.step for p in steps] == sorted({p.step for p in steps}) and steps[-1].step == 3
    # Created once each, Service first, as rendered; the Job's pods ran with the rank environment resolved.
    expected_service, expected_job = render_manifests(
        load_template(template_path), str(spec.path("spec.json")), "r3-sft", settings(template_path)
    )
    creates = sorted(requests(kmock, "POST", JOBS) + requests(kmock, "POST", SERVICES), key=lambda r: r.id)
    assert [r.url.path for r in creates] == [SERVICES, JOBS]
    assert kmock.objects["v1/services", NAMESPACE, JOB].history[0] == expected_service
    assert kmock.objects["batch/v1/jobs", NAMESPACE, JOB].history[0] == expected_job
    pods = kubelet.latest(JOB).pods
    assert sorted(p.env["PET_NODE_RANK"] for p in pods) == ["0", "1"]
    # Every pod's log, collected before the Job went; the kubelet's free port stood in for the rendezvous.
    collected = logs(spec)
    assert set(collected) == {p.name for p in pods}
    port = pods[0].env["PET_MASTER_PORT"]
    for pod in pods:
        assert f"rank {pod.index} of 2 nodes x 1, rendezvous 127.0.0.1:{port}" in collected[pod.name]
    # Nothing outlives the stage: the Job (its pods in the background) and the Service are deleted.
    deletes = requests(kmock, "DELETE", JOBS)
    assert [r.params.get("propagationPolicy") for r in deletes] == ["Background"]
    assert not exists(kmock, "batch/v1/jobs", JOB) and not exists(kmock, "v1/services", JOB)
    assert not any(exists(kmock, "v1/pods", p.name) for p in pods)


async def test_a_failed_pod_restarts_the_stage_as_a_new_job_and_an_unreadable_log_is_only_noted(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    training = settings(template_path, job_backoff_limit=1)
    async with ProcessKubelet(
        kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in, failing={1: 1}, unreadable_logs={0}
    ) as kubelet:
        result = await asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft")
        await kubelet.wait_collected(JOB)

    assert result.ranks == (0, 1)
    # Index 1 failed: its Job failed at once (no pod replaced in it), index 0 was stopped; the second Job, created
    # after the first was gone, ran both indexes afresh and produced the result.
    first, second = kubelet.runs[JOB]
    assert first.outcome == "Failed: BackoffLimitExceeded" and second.outcome == "Complete"
    assert sorted((p.index, p.exit_code) for p in first.pods) == [(0, -9), (1, 1)]
    assert sorted((p.index, p.exit_code) for p in second.pods) == [(0, 0), (1, 0)]
    assert "rank 0 done" in next(p for p in second.pods if p.index == 0).log.read_text()
    assert len(requests(kmock, "POST", JOBS)) == len(requests(kmock, "DELETE", JOBS)) == 2
    assert [job["spec"]["backoffLimit"] for job in created_jobs(kmock)] == [0, 0]
    # Each attempt's logs apart; index 0's could not be read (its node is "gone"): noted, not fatal.
    failed_pod = next(p for p in first.pods if p.index == 1)
    assert set(logs(spec, 1)) == {failed_pod.name}
    assert "simulated failure" in logs(spec, 1)[failed_pod.name]
    assert set(logs(spec, 2)) == {p.name for p in second.pods if p.index == 1}
    assert not exists(kmock, "batch/v1/jobs", JOB) and not exists(kmock, "v1/services", JOB)


async def test_a_pod_lost_mid_stage_restarts_the_whole_stage(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    spec.out_dir.mkdir(parents=True)
    (spec.out_dir / "hold").touch()
    training = settings(template_path, job_backoff_limit=1)
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        running = asyncio.create_task(asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft"))
        await kubelet.wait_running(JOB, 2)
        kubelet.kill(JOB, 1)  # its node is lost
        await _until_runs(kubelet, 2)
        # The second Job came only once the first and its pods were gone (their processes ended).
        first = kubelet.runs[JOB][0]
        assert all(p.exit_code is not None and not exists(kmock, "v1/pods", p.name) for p in first.pods)
        restarted = await kubelet.wait_running(JOB, 2)
        (spec.out_dir / "hold").unlink()
        result = await running
        await kubelet.wait_collected(JOB)

    assert result.ranks == (0, 1)
    first, second = kubelet.runs[JOB]
    # No replacement pod joined the first Job's group: the lost pod failed the Job, its other pod was stopped.
    assert sorted((p.index, p.attempt, p.exit_code) for p in first.pods) == [(0, 0, -9), (1, 0, -9)]
    assert first.outcome == "Failed: BackoffLimitExceeded" and first.collected
    assert second.pods == restarted and second.outcome == "Complete"
    assert sorted((p.index, p.exit_code) for p in second.pods) == [(0, 0), (1, 0)]
    # The first Job, held, wrote nothing: the result is the second's.
    assert "rank 0 done" in logs(spec, 2)[next(p.name for p in second.pods if p.index == 0)]
    assert not any("done" in text for text in logs(spec, 1).values())
    # The restart gets what is left of the stage's time, no more.
    first_job, second_job = created_jobs(kmock)
    assert second_job["spec"]["activeDeadlineSeconds"] <= first_job["spec"]["activeDeadlineSeconds"] == 120


async def _until_runs(kubelet: ProcessKubelet, count: int) -> None:
    while len(kubelet.runs.get(JOB, [])) < count:
        await asyncio.sleep(0.02)


async def test_a_stage_out_of_restarts_fails_naming_every_attempts_reason(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    training = settings(template_path, job_backoff_limit=2)
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in, failing={1: 3}) as kubelet:
        with pytest.raises(TrainingFailed) as failed:
            await asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft")
        await kubelet.wait_collected(JOB)

    runs = kubelet.runs[JOB]
    assert [run.outcome for run in runs] == ["Failed: BackoffLimitExceeded"] * 3  # 1 + job_backoff_limit attempts
    assert all(run.collected for run in runs)
    message = str(failed.value)
    assert message.startswith(f"training Job {NAMESPACE}/{JOB}: 3 attempts failed:\n")
    for attempt, run in enumerate(runs, start=1):
        # The controller stopped and deleted the pod still running; the failed one's log was collected.
        (failed_pod,) = [p for p in run.pods if p.exit_code == 1]
        assert list(logs(spec, attempt)) == [failed_pod.name]
        assert (
            f"\n  attempt {attempt}: failed: BackoffLimitExceeded (Job has reached the specified backoff limit); "
            f"pod {failed_pod.name} exited with 1\n"
        ) in message
    # The last attempt's failed pod is quoted; the logs' place is named.
    assert f"--- pod {failed_pod.name}, last lines:\nsimulated failure of this attempt" in message
    assert f"logs in {spec.path('logs')}" in message
    # Everything cleaned up: each Job was deleted (and the next created only once it was gone), and the Service.
    assert len(requests(kmock, "POST", JOBS)) == len(requests(kmock, "DELETE", JOBS)) == 3
    assert not exists(kmock, "batch/v1/jobs", JOB) and not exists(kmock, "v1/services", JOB)
    assert not any(exists(kmock, "v1/pods", p.name) for run in runs for p in run.pods)
    assert TrainingResult.read(spec.out) is None


async def test_a_job_past_its_deadline_fails_the_stage(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    spec.out_dir.mkdir(parents=True)
    (spec.out_dir / "hold").touch()  # the ranks never get going
    training = settings(template_path, job_timeout_s=1, job_backoff_limit=2)
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        with pytest.raises(TrainingFailed, match=r": failed: DeadlineExceeded \(Job was active longer"):
            await asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft")
        await kubelet.wait_collected(JOB)

    assert len(kubelet.runs[JOB]) == 1  # the stage's time is spent: not started again, restarts left or not
    assert not exists(kmock, "batch/v1/jobs", JOB) and not exists(kmock, "v1/services", JOB)


async def test_a_job_deleted_under_the_launcher_fails_the_stage(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    spec.out_dir.mkdir(parents=True)
    (spec.out_dir / "hold").touch()
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        running = asyncio.create_task(
            asyncio.to_thread(launcher(kmock, settings(template_path, job_backoff_limit=2)).run, spec, name="r3-sft")
        )
        await kubelet.wait_running(JOB, 2)
        await kmock.delete(f"{JOBS}/{JOB}")  # someone else's kubectl delete
        with pytest.raises(TrainingFailed, match="disappeared"):
            await running
        await kubelet.wait_collected(JOB)

    assert len(requests(kmock, "POST", JOBS)) == 1  # a person's way to stop a stage: not started again
    assert not exists(kmock, "v1/services", JOB)


async def test_a_short_api_outage_while_watching_is_ridden_out(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    spec.out_dir.mkdir(parents=True)
    (spec.out_dir / "hold").touch()
    outage = 5

    def unavailable(request: Any) -> Any:
        nonlocal outage
        if outage == 0:
            raise ReactionMismatchError  # it is over: this reaction retires, kmock serves the Job as before
        outage -= 1
        raise KubernetesError(status=503, reason="ServiceUnavailable", message="the API server is restarting")

    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        running = asyncio.create_task(
            asyncio.to_thread(launcher(kmock, settings(template_path)).run, spec, name="r3-sft")
        )
        await kubelet.wait_running(JOB, 2)
        kmock["get", resource("batch", "v1", "jobs"), name(JOB)] << unavailable
        while outage:
            await asyncio.sleep(0.02)
        (spec.out_dir / "hold").unlink()
        result = await running

    assert result.ranks == (0, 1)


async def test_a_refused_read_fails_the_stage_at_once(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    spec.out_dir.mkdir(parents=True)
    (spec.out_dir / "hold").touch()
    refusals: list[Any] = []
    forbidden = KubernetesError(status=403, reason="Forbidden", message='jobs.batch is forbidden: cannot "get"')

    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        running = asyncio.create_task(
            asyncio.to_thread(launcher(kmock, settings(template_path)).run, spec, name="r3-sft")
        )
        await kubelet.wait_running(JOB, 2)
        kmock["get", resource("batch", "v1", "jobs"), name(JOB)] >> refusals << forbidden  # the Role lost a verb
        with pytest.raises(TrainingFailed, match=r"403 Forbidden: jobs.batch is forbidden"):
            await running
        await kubelet.wait_collected(JOB)

    assert len(refusals) == 1  # not retried
    assert not exists(kmock, "batch/v1/jobs", JOB)


async def test_a_restarted_trainer_follows_the_running_job_instead_of_starting_another(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    training = settings(template_path)
    spec.out_dir.mkdir(parents=True)
    (spec.out_dir / "hold").touch()
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        # The first trainer created the stage's objects and went away; its Job's pods run on.
        service, job = render_manifests(load_template(template_path), str(spec.write()), "r3-sft", training)
        await kmock.post(SERVICES, json=service)
        await kmock.post(JOBS, json=job)
        first = await kubelet.wait_running(JOB, 2)

        follower = asyncio.create_task(asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft"))
        await asyncio.sleep(0.5)  # ten polls
        assert not follower.done()
        (spec.out_dir / "hold").unlink()
        result = await follower

    assert result.ranks == (0, 1)
    assert len(requests(kmock, "POST", JOBS)) == 1  # the first trainer's only
    assert kubelet.latest(JOB).pods == first  # the same pods finished the stage
    assert len(kubelet.runs[JOB]) == 1
    assert not exists(kmock, "batch/v1/jobs", JOB) and not exists(kmock, "v1/services", JOB)


async def test_a_finished_job_left_behind_is_replaced_or_adopted(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    training = settings(template_path)
    service, job = render_manifests(load_template(template_path), str(spec.write()), "r3-sft", training)
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
    kmock.objects["v1/services", NAMESPACE, JOB] = service
    kmock.objects["batch/v1/jobs", NAMESPACE, JOB] = {**job, "status": {"failed": 1, "conditions": [failed]}}
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        # A Job that failed before this trainer came: deleted, and the stage started again.
        result = await asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft")
        assert result.ranks == (0, 1)
        assert len(kubelet.runs[JOB]) == 1  # the kubelet left the failed one alone, ran the new one
        assert len(requests(kmock, "POST", JOBS)) == 1

        # A Job that completed, with its result, before this trainer could clean it up: its result is taken.
        complete = {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
        kmock.objects["batch/v1/jobs", NAMESPACE, JOB] = {**job, "status": {"succeeded": 2, "conditions": [complete]}}
        adopted = await asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft")

    assert adopted == result
    assert len(requests(kmock, "POST", JOBS)) == 1 and len(kubelet.runs[JOB]) == 1  # nothing started
    assert not exists(kmock, "batch/v1/jobs", JOB)


async def test_a_job_of_the_same_name_for_another_spec_is_replaced(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    training = settings(template_path)
    other = TrainingSpec(**{**spec.__dict__, "out": str(tmp_path / "r3-sft-planned-before")})
    other.out_dir.mkdir(parents=True)
    (other.out_dir / "hold").touch()
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        _, job = render_manifests(load_template(template_path), str(other.write()), "r3-sft", training)
        await kmock.post(JOBS, json=job)
        await kubelet.wait_running(JOB, 2)

        result = await asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft")

    assert result.out == str(spec.path("model"))
    first, second = kubelet.runs[JOB]
    assert first.collected and first.outcome is None  # deleted while it ran
    assert second.outcome == "Complete"
    assert TrainingResult.read(other.out) is None


async def test_a_stage_runs_as_a_pytorchjob(kmock: KubernetesEmulator, tmp_path: Path, template_path: Path) -> None:
    spec = stage_spec(tmp_path)
    training = settings(template_path, job_kind="pytorchjob", job_nodes=3)
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in) as kubelet:
        result = await asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft")
        await kubelet.wait_collected(JOB)

    assert (result.world_size, result.ranks) == (3, (0, 1, 2))
    assert set(logs(spec)) == {f"{JOB}-master-0", f"{JOB}-worker-0", f"{JOB}-worker-1"}
    assert kubelet.latest(JOB).outcome == "Complete"
    assert [r.url.path for r in requests(kmock, "POST", PYTORCHJOBS.format(namespace=NAMESPACE))] == [
        PYTORCHJOBS.format(namespace=NAMESPACE)
    ]
    assert requests(kmock, "POST", SERVICES) == []  # the operator makes its own
    assert not exists(kmock, "kubeflow.org/v1/pytorchjobs", JOB)


async def test_a_failed_pytorchjob_replica_restarts_the_stage_as_a_new_pytorchjob(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path
) -> None:
    spec = stage_spec(tmp_path)
    training = settings(template_path, job_kind="pytorchjob", job_nodes=3, job_backoff_limit=1)
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=stand_in, failing={2: 1}) as kubelet:
        result = await asyncio.to_thread(launcher(kmock, training).run, spec, name="r3-sft")
        await kubelet.wait_collected(JOB)

    assert result.ranks == (0, 1, 2)
    first, second = kubelet.runs[JOB]
    # restartPolicy Never: the operator failed the PyTorchJob instead of restarting the worker in place.
    assert first.outcome == "Failed: PyTorchJobFailed" and second.outcome == "Complete"
    assert [p.attempt for p in first.pods] == [0, 0, 0]
    # The pods' names repeat from one PyTorchJob to the next: each attempt's logs are kept apart.
    names = {f"{JOB}-master-0", f"{JOB}-worker-0", f"{JOB}-worker-1"}
    assert names >= set(logs(spec, 1)) and "simulated failure" in logs(spec, 1)[f"{JOB}-worker-1"]
    assert set(logs(spec, 2)) == names and "simulated failure" not in logs(spec, 2)[f"{JOB}-worker-1"]
    assert len(requests(kmock, "POST", PYTORCHJOBS.format(namespace=NAMESPACE))) == 2
    assert not exists(kmock, "kubeflow.org/v1/pytorchjobs", JOB)


# --- the real worker --------------------------------------------------------------------------------------------


@pytest.fixture
def micro_stage(tmp_path: Path) -> Iterator[TrainingSpec]:
    from support.tiny_models import QUESTION, STEPS, write_chat_checkpoint

    base = write_chat_checkpoint(tmp_path / "base")
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"question": QUESTION, "steps": list(STEPS)}) + "\n" for _ in range(8)))
    yield TrainingSpec(
        stage="sft",
        data=str(data),
        base=str(base),
        out=str(tmp_path / "r3-sft"),
        recipe=SFTConfig(max_steps=4, batch_size=4, warmup_steps=0),
        strategy=Strategy(checkpoint_steps=2),
    )


@pytest.mark.slow
async def test_the_worker_trains_across_two_pods_under_torchrun(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path, micro_stage: TrainingSpec
) -> None:
    """The Job's own command, unchanged: torchrun in each pod, the rendezvous on index 0, gloo on the CPU."""
    seen: Callable[[list[str]], list[str]] = lambda argv: argv  # noqa: E731
    steps: list[Progress] = []
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=seen) as kubelet:
        result = await asyncio.to_thread(
            launcher(kmock, settings(template_path)).run, micro_stage, name="r3-sft", on_progress=steps.append
        )
        await kubelet.wait_collected(JOB)

    assert (result.world_size, result.ranks, result.steps) == (2, (0, 1), 4)
    assert result.sharding == "ddp"
    assert (Path(result.out) / "config.json").is_file()
    assert steps and steps[-1].step == 4
    assert all("torch.distributed.run" in p.argv for p in kubelet.latest(JOB).pods)
    assert len(logs(micro_stage)) == 2
    assert not exists(kmock, "batch/v1/jobs", JOB) and not exists(kmock, "v1/services", JOB)


# Runs the worker as torchrun's script, but rank 1 dies at step 3, once checkpoint-2 is written (a lost GPU).
CRASHING_WORKER = """
import os, sys
from services.trainer.training import worker

report = worker.ProgressWriter.__call__

def report_then_die(self, step, max_steps, loss):
    report(self, step, max_steps, loss)
    if step == 3 and os.environ["RANK"] == "1":
        print("rank 1 dies at step 3", flush=True)
        os._exit(1)

worker.ProgressWriter.__call__ = report_then_die
sys.exit(worker.main(sys.argv[1:]))
"""


@pytest.mark.slow
async def test_a_rank_lost_mid_stage_restarts_the_stage_from_its_checkpoint(
    kmock: KubernetesEmulator, tmp_path: Path, template_path: Path, micro_stage: TrainingSpec
) -> None:
    """The first Job's pods run a worker whose rank 1 dies after the step-2 checkpoint; the second Job's the real
    one, which resumes there."""
    crashing = tmp_path / "crashing_worker.py"
    crashing.write_text(CRASHING_WORKER)
    started: list[list[str]] = []

    def first_job_crashes(argv: list[str]) -> list[str]:
        started.append(argv)
        if len(started) > 2:  # the first Job's two pods are the first two started
            return argv
        assert argv[3:5] == ["-m", WORKER_MODULE], argv
        return [*argv[:3], str(crashing), *argv[5:]]

    training = settings(template_path, job_backoff_limit=1)
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet", command=first_job_crashes) as kubelet:
        result = await asyncio.to_thread(launcher(kmock, training).run, micro_stage, name="r3-sft")
        await kubelet.wait_collected(JOB)

    assert (result.world_size, result.ranks, result.steps) == (2, (0, 1), 4)
    assert result.resumed_from_step == 2
    first, second = kubelet.runs[JOB]
    assert first.outcome == "Failed: BackoffLimitExceeded" and second.outcome == "Complete"
    assert any("rank 1 dies at step 3" in text for text in logs(micro_stage, 1).values())
    assert len(logs(micro_stage, 2)) == 2
    assert not exists(kmock, "batch/v1/jobs", JOB) and not exists(kmock, "v1/services", JOB)
