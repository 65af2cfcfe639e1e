"""The kubelet of `make test-images` (kubelet.py), without Docker: it translates every workload the chart renders, and
refuses what it cannot translate. Runs in `make test`, so that a chart change it would not follow shows at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.helmchart import render

from images.kubelet import Kubelet, Untranslated


def kubelet(tmp_path: Path, *args: str) -> Kubelet:
    return Kubelet(render(*args), scratch=tmp_path, volume_prefix="test", host_cpus=2, images={})


def test_every_rendered_workload_translates(tmp_path: Path) -> None:
    translator = kubelet(tmp_path, "--set", "auth.tokens[0]=a-token-of-sixteen-chars")
    pods = {pod.component: pod for pod in map(translator.pod, translator.manifests.workloads())}
    assert sorted(pods) == ["policy", "ppm", "redis", "sandbox", "search", "trainer", "worker"]

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
