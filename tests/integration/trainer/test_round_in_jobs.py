"""A self-evolution round whose training stages run as Kubernetes Jobs, through every stage: the search tier of
test_rounds.py (the real services, a Celery worker, the teacher policy) over micro models, and the SFT and PPM
stages each an Indexed Job of two pods on kmock, whose pods the process kubelet (tests/support/job_runner.py) runs
as `python -m torch.distributed.run -m services.trainer.training.worker SPEC` — the Job's own command, unchanged —
a rendezvous between the two pods and gloo on the CPU.

The round runs in a thread (`asyncio.to_thread`): kmock and the kubelet run on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmock import KubernetesEmulator
from kubernetes import client

from services.common.store import ModelStore
from services.trainer.config import preset
from services.trainer.dispatch import CeleryDispatcher
from services.trainer.rounds import RoundRunner
from services.trainer.training.jobs import KubeJobLauncher
from services.trainer.training.settings import TrainingSettings
from support.job_runner import ProcessKubelet
from support.processes import REPO
from support.search_tier import teacher_tier
from support.tiny_models import publish_micro_models

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = preset("tiny", seed=5)
NAMESPACE = "ml"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
STAGES = ("sft", "ppm")


def training_job_template() -> dict[str, Any]:
    """The least the chart's template carries that matters here: one container `train` (no command: the launcher
    adds it) and the environment the worker needs in a pod (this checkout's code, no Hub)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "thinkmesh-train", "namespace": NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "train",
                            "image": "ghcr.io/thinkmesh/trainer:test",
                            "env": [
                                {"name": "PYTHONPATH", "value": str(REPO)},
                                {"name": "HF_HUB_OFFLINE", "value": "1"},
                            ],
                        }
                    ],
                }
            }
        },
    }


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ModelStore, CeleryDispatcher]]:
    store = ModelStore(tmp_path / "store")
    publish_micro_models(store)
    with teacher_tier(tmp_path, store.root, CONFIG) as tier:
        yield store, tier.dispatcher


async def test_a_round_trains_its_stages_as_two_pod_jobs(
    kmock: KubernetesEmulator, tmp_path: Path, stack: tuple[ModelStore, CeleryDispatcher]
) -> None:
    store, dispatcher = stack
    template = tmp_path / "job.yaml"
    template.write_text(yaml.safe_dump(training_job_template()))
    settings = TrainingSettings(
        training_mode="job",
        job_template=str(template),
        job_namespace=NAMESPACE,
        job_nodes=2,
        job_gpus_per_node=1,
        job_timeout_s=600,
    )
    settings.validate("the test")

    def connect() -> client.ApiClient:
        return client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))

    launcher = KubeJobLauncher(settings, client_factory=connect, poll_interval_s=0.1)
    async with ProcessKubelet(kmock, NAMESPACE, tmp_path / "kubelet") as kubelet:
        state = await asyncio.to_thread(RoundRunner(store, CONFIG, dispatcher, launcher=launcher).run)
        for stage in STAGES:
            await kubelet.wait_collected(f"thinkmesh-train-r1-{stage}")

    assert state.round == 1
    assert state.finished == ["search", "extract", "sft", "ppm", "evaluate", "publish"]
    assert state.state == "succeeded", state.message
    # One Job per training stage, each of two indexes, created once and run once: both pods took part, under
    # torchrun, and the stage reports a world of two.
    created = sorted((r for r in kmock if r.method == "POST" and r.url.path == JOBS), key=lambda r: r.id)
    assert [job.data["metadata"]["name"] for job in created] == [f"thinkmesh-train-r1-{s}" for s in STAGES]
    train = store.root / "rounds" / "0001" / "train"
    for stage, job in zip(STAGES, created, strict=True):
        name = job.data["metadata"]["name"]
        assert (job.data["spec"]["completions"], job.data["spec"]["completionMode"]) == (2, "Indexed")
        (run,) = kubelet.runs[name]
        assert run.outcome == "Complete"
        assert sorted((p.index, p.exit_code) for p in run.pods) == [(0, 0), (1, 0)]
        assert all(p.argv[1:3] == ["-m", "torch.distributed.run"] for p in run.pods)
        ranks = [json.loads((train / stage / "ranks" / f"{rank}.json").read_text()) for rank in (0, 1)]
        assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
        assert state.metrics[f"{stage}_world_size"] == 2
        # Every pod's log, collected before its Job went.
        assert sorted(p.name for p in (train / stage / "logs" / "attempt-1").glob("*.log")) == sorted(
            f"{p.name}.log" for p in run.pods
        )
    # Nothing of the stages is left on the cluster.
    assert {r.plural for r, _, _ in kmock.objects} == {"jobs", "services", "pods"}
    left = [(r.plural, name) for (r, _, name), obj in kmock.objects.items() if not obj.deleted]
    assert left == [], left
    # The candidates the Jobs trained are in the store, published, with the world they were trained in.
    assert store.current_name("policy") == state.policy_version == "v2"
    assert store.current_name("ppm") == state.ppm_version == "v2"
    for kind in ("policy", "ppm"):
        version = store.get(kind, "v2")
        assert version.lineage.round == 1 and version.lineage.metrics["world_size"] == 2
        assert (version.path / "config.json").is_file()
