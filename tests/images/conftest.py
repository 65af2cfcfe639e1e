"""The deployment the image checks run against: the images `make images` built, started as the chart runs them.

The chart is rendered with `helm template` (tests/e2e/helmchart.py) and its workloads are started by a tiny kubelet
(kubelet.py) in Docker: each pod spec as it is rendered, on a network of their own where each container answers to
the names of the Services that select it, so that the rendered gRPC targets and broker URLs resolve as in the
cluster. Everything starts once per session and at once, so that the containers warm up together: Redis, the
sandbox, then, once the chart's seed Job (rendered to import micro models made here from a host directory) has run,
the rest; policy and PPM run their init containers, which wait for the seeded versions, first. The tests reach the
gRPC ports on 127.0.0.1 only.

Images: the ones scripts/images.sh built, read from the same settings (TORCH_VARIANT, IMAGE_PREFIX, IMAGE_TAG,
PYTHON_IMAGE). The CPU variant, the default, is rendered with the chart's own values for CPU clusters,
values/cpu-trial.yaml (the CPU builds' tag suffix, the hf backend, no GPU); the rendered references must then be
the local images. A missing engine or image fails the run: `make test-images` runs only where the images were built.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.helmchart import CHART, VALUES, Rendered, render

from images.docker import Deployment, DockerError, Session, docker
from images.kubelet import CLUSTER_DOMAIN, Kubelet, Pod
from services.common.store import ModelStore
from support.tiny_models import publish_micro_models

HERE = Path(__file__).resolve().parent
# Every workload the chart renders, by component, in the order they are started; the seed Job runs after the
# sandbox (which needs no model) and before the rest.
COMPONENTS = ("redis", "sandbox", "trainer", "policy", "ppm", "search", "worker-solve", "worker-round")
MAKE_IMAGES = "run `make images` (`make test-images` checks the images it built)"
# The test-only Redis (redis.Dockerfile): the chart's Redis image cannot be pulled here.
REDIS_IMAGE = "thinkmesh-test/redis:local"
# Where publish_micro_models puts the two versions in a fresh store: the seed Job's sources under /models.
MICRO_POLICY = "models/policy/v1"
MICRO_PPM = "models/ppm/v1"


@dataclass(frozen=True)
class Images:
    """Which build of scripts/images.sh to run, from its own settings."""

    torch_variant: str
    python: str
    prefix: str | None  # None: the registry values.yaml names
    tag: str | None  # None: the chart's appVersion

    @classmethod
    def from_env(cls) -> Images:
        variant = os.environ.get("TORCH_VARIANT", "cpu")
        assert variant in ("cpu", "cuda"), f"TORCH_VARIANT is cpu or cuda, not {variant!r}"
        return cls(
            torch_variant=variant,
            python=os.environ.get("PYTHON_IMAGE", "thinkmesh/python:3.11-bookworm"),
            prefix=os.environ.get("IMAGE_PREFIX") or None,
            tag=os.environ.get("IMAGE_TAG") or None,
        )

    def values_files(self) -> list[Path]:
        """The chart's values set for this build: the CPU trial's for the CPU images, the defaults for the GPU ones."""
        return [VALUES / "cpu-trial.yaml"] if self.torch_variant == "cpu" else []

    def image_values(self) -> dict[str, Any]:
        """Repository and tag of every thinkmesh image, where the settings name other ones than the chart's."""
        changed: dict[str, Any] = {}
        for component, values in yaml.safe_load((CHART / "values.yaml").read_text()).items():
            repository = values.get("image", {}).get("repository", "") if isinstance(values, dict) else ""
            name = repository.rsplit("/", 1)[-1]
            if not name.startswith("thinkmesh-"):
                continue  # not one of ours (Redis)
            image = {"repository": f"{self.prefix}/{name}"} if self.prefix else {}
            if self.tag:
                image["tag"] = self.tag
            if image:
                changed[component] = {"image": image}
        return changed

    def check_present(self, refs: set[str]) -> None:
        missing = [ref for ref in sorted(refs) if docker("image", "inspect", ref, check=False).returncode != 0]
        if missing:
            pytest.fail(f"not in the local Docker engine: {', '.join(missing)}; {MAKE_IMAGES}", pytrace=False)

    def build_redis(self) -> None:
        """The test-only Redis, on the same base as the images (the legacy builder: BuildKit cannot run offline)."""
        proc = subprocess.run(
            ["docker", "build", "--quiet", "--build-arg", f"PYTHON_IMAGE={self.python}", "--tag", REDIS_IMAGE, "-"],
            input=(HERE / "redis.Dockerfile").read_text(),
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        if proc.returncode != 0:
            pytest.fail(f"could not build {REDIS_IMAGE} from tests/images/redis.Dockerfile:\n{proc.stderr}")


def _values(images: Images, token: str, redis_password: str, models: Path) -> dict[str, Any]:
    """What the checks change in the chart's values, as a last `helm install -f` would."""
    trainer = images.image_values().get("trainer", {})
    return {
        **images.image_values(),
        "clusterDomain": CLUSTER_DOMAIN,
        "tls": {"enabled": False},  # the default; the tests dial plaintext
        # Known secrets instead of ones the secrets Job makes (no API server here), so that the tests can
        # authenticate; `thinkmesh secrets ensure` itself runs against kmock (tests/integration/common).
        "auth": {"tokens": [token]},
        "redis": {"auth": {"password": redis_password}},
        # The seed Job imports micro models made here (a host directory) instead of bootstrapping (minutes).
        "seed": {
            "mode": "import",
            "import": {
                "policy": f"/models/{MICRO_POLICY}",
                "ppm": f"/models/{MICRO_PPM}",
                "volume": {"hostPath": {"path": str(models), "type": "Directory"}},
            },
        },
        # No API server to roll Deployments through (the rollout runs against kmock in tests/integration/trainer):
        # the model pods reload in place.
        "trainer": {**trainer, "rollout": {"enabled": False}},
    }


def _workloads(manifests: Rendered) -> dict[str, dict[str, Any]]:
    """The rendered workloads by component: all of them, each known to the start order."""
    workloads = {
        w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: w for w in manifests.workloads()
    }
    assert sorted(workloads) == sorted(COMPONENTS), (
        f"the chart renders {sorted(workloads)}; start order knows {COMPONENTS}"
    )
    return workloads


def _image(workload: dict[str, Any]) -> str:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def _make_micro_models(scratch: Path) -> None:
    """Micro models for the seed Job to import, at MICRO_POLICY and MICRO_PPM under `scratch`."""
    policy, ppm = publish_micro_models(ModelStore(scratch))
    assert (policy.path.relative_to(scratch).as_posix(), ppm.path.relative_to(scratch).as_posix()) == (
        MICRO_POLICY,
        MICRO_PPM,
    )
    for path in (scratch, *scratch.rglob("*")):  # readable by the pods' uids
        path.chmod(0o755 if path.is_dir() else 0o644)


def _run_job(session: Session, job: Pod) -> None:
    """A Job's pod as the Job controller runs it once: its init containers, then its container, to completion."""
    for step in (*job.init, replace(job, init=())):
        session.run_once(step, timeout=300)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    try:
        host_cpus = int(docker("info", "--format", "{{.NCPU}}", timeout=30).stdout)
        engine_error = ""
    except DockerError as exc:
        engine_error = str(exc)
    if engine_error:  # failed outside the `except`, so that the message stands alone
        pytest.fail(f"no Docker engine answers ({engine_error}); start one, then {MAKE_IMAGES}", pytrace=False)

    root = tmp_path_factory.mktemp("images")
    images = Images.from_env()
    token = secrets.token_urlsafe(24)
    values_file = root / "values.yaml"
    models = root / "models"
    _make_micro_models(models)
    password = secrets.token_hex(16)  # it goes into redis:// URLs unquoted: the chart allows URL-safe characters
    values_file.write_text(json.dumps(_values(images, token, password, models)))  # JSON is YAML
    files = [*images.values_files(), values_file]
    manifests = render(*(arg for path in files for arg in ("-f", str(path))))
    workloads = _workloads(manifests)
    # Every thinkmesh image the chart pulls must be one scripts/images.sh built here. The chart's Redis image cannot
    # be pulled: the test image from redis.Dockerfile runs instead, with the rendered command and arguments
    # unchanged (Debian's redis-server takes them all).
    redis = _image(workloads["redis"])
    images.check_present({images.python, *(_image(w) for c, w in workloads.items() if c != "redis")})
    images.build_redis()

    session = Session(helper_image=images.python)
    kubelet = Kubelet(
        manifests,
        scratch=root / "volumes",
        volume_prefix=session.prefix,
        host_cpus=host_cpus,
        images={redis: REDIS_IMAGE},
    )
    pods = {component: kubelet.pod(workloads[component]) for component in COMPONENTS}
    seed = kubelet.pod(manifests.job("seed"))
    try:
        session.create_network()
        for component in COMPONENTS:
            if component == "trainer":
                _run_job(session, seed)
            session.start(pods[component])
        yield Deployment(manifests, session, token)
    finally:
        session.close()
