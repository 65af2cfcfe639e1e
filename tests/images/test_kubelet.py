"""The kubelet of `make test-images` (kubelet.py), without Docker: it translates every workload the chart renders, and
refuses what it cannot translate. Runs in `make test`, so that a chart change it would not follow shows at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.helmchart import render

from images.kubelet import Kubelet, Untranslated

# What the image tests set too: secrets by value (the secrets Job needs an API server), no rollout (the same).
GIVEN = (
    "--set", "auth.tokens[0]=a-token-of-sixteen-chars",
    "--set", "redis.auth.password=a-password",
    "--set", "trainer.rollout.enabled=false",
)  # fmt: skip


def kubelet(tmp_path: Path, *args: str) -> Kubelet:
    return Kubelet(render(*GIVEN, *args), scratch=tmp_path, volume_prefix="test", host_cpus=2, images={})


def test_every_rendered_workload_translates(tmp_path: Path) -> None:
    translator = kubelet(tmp_path)
    pods = {pod.component: pod for pod in map(translator.pod, translator.manifests.workloads())}
    assert sorted(pods) == ["policy", "ppm", "redis", "sandbox", "search", "trainer", "worker-round", "worker-solve"]
    # The model pods' init containers (waiting for the seed) run first, with the pod's store mount.
    (wait,) = pods["policy"].init
    assert wait.component == "policy-wait-for-model" and wait.args[:2] == ("models", "wait")
    assert any(o.endswith(":/var/lib/thinkmesh/store:ro") for o in wait.options)
    # The seed Job's pod, and a hostPath source for its import.
    seed = translator.pod(translator.manifests.job("seed"))
    assert seed.component == "seed" and seed.args == ("bootstrap", "--preset", "small")
    importing = kubelet(
        tmp_path / "import",
        "--set", "seed.mode=import",
        "--set", "seed.import.policy=/models/p",
        "--set", f"seed.import.volume.hostPath.path={tmp_path}",
    )  # fmt: skip
    job = importing.pod(importing.manifests.job("seed"))
    assert [step.component for step in job.init] == ["seed-import-policy"] and job.component == "seed"
    assert f"{tmp_path}:/models:ro" in job.options

    search = pods["search"]
    # The names its callers' rendered targets use, and the token file from the rendered Secret.
    assert "thinkmesh-search.thinkmesh.svc.cluster.local" in search.aliases
    assert (tmp_path / "thinkmesh-search" / "auth" / "tokens").read_text() == "a-token-of-sixteen-chars\n"
    assert {"--read-only", "--cap-drop=ALL", "no-new-privileges"} <= set(search.options)
    # $(REDIS_PASSWORD) expanded from the env the rendered Secret gives.
    redis = pods["redis"]
    password = next(o.split("=", 1)[1] for o in redis.options if o.startswith("REDIS_PASSWORD="))
    assert redis.args[redis.args.index("--requirepass") + 1] == password


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "sandbox.runtimeClassName=gvisor"), "runtimeClassName not translated"),
        (("--set", "tls.enabled=true", "--set", "tls.existingSecret=certs"), "no Secret certs"),
        (("--set", "search.securityContext.procMount=Unmasked"), "procMount not translated"),
    ],
)
def test_what_it_cannot_translate_fails(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    translator = kubelet(tmp_path, *args)
    with pytest.raises(Untranslated, match=message):
        for workload in translator.manifests.workloads():
            translator.pod(workload)
