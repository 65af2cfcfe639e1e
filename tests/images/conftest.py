"""The deployment the image checks run against: the images `make images` built, started as the chart runs them.

The chart is rendered with `helm template` (tests/e2e/helmchart.py) and its workloads are started by a tiny kubelet
(kubelet.py) in Docker: each pod spec as it is rendered, on a network of their own where each container answers to
the names of the Services that select it, so that the rendered gRPC targets and broker URLs resolve as in the
cluster. Everything starts once per session and at once, so that the containers warm up together: Redis, the
sandbox, then, once the trainer image's CLI has imported micro models made here into the store, the rest. The tests
reach the gRPC ports on 127.0.0.1 only.

Images: `$IMAGE_PREFIX/thinkmesh-<name>:$IMAGE_TAG` (default ghcr.io/thinkmesh and the chart's appVersion); the
torch images (policy, ppm, trainer) carry the suffix "-cpu" when TORCH_VARIANT is cpu, the default, as
scripts/images.sh tags them, and the policy then runs the hf backend. The values below make the chart render those
references. A missing engine or image fails the run: `make test-images` runs only where the images were built.
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
from e2e.helmchart import CHART, Rendered, render

from images.docker import Deployment, DockerError, Session, docker
from images.kubelet import CLUSTER_DOMAIN, Kubelet, Pod
from services.common.store import ModelStore
from support.tiny_models import publish_micro_models

HERE = Path(__file__).resolve().parent
# Every workload the chart renders, by component, in the order they are started; the trainer imports the models
# after the sandbox (which needs none) and before the rest.
COMPONENTS = ("redis", "sandbox", "trainer", "policy", "ppm", "search", "worker")
# Built on the torch layer; scripts/images.sh tags their CPU build TAG-cpu.
TORCH_IMAGES = ("thinkmesh-policy", "thinkmesh-ppm", "thinkmesh-trainer")
MAKE_IMAGES = "run `make images` (`make test-images` checks the images it built)"


@dataclass(frozen=True)
class Images:
    """The local images, as scripts/images.sh named them."""

    prefix: str
    tag: str
    torch_variant: str
    python: str
    redis: str

    @classmethod
    def from_env(cls) -> Images:
        tag = os.environ.get("IMAGE_TAG") or str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
        variant = os.environ.get("TORCH_VARIANT", "cpu")
        assert variant in ("cpu", "cuda"), f"TORCH_VARIANT is cpu or cuda, not {variant!r}"
        return cls(
            # scripts/images.sh's default: the registry and namespace values.yaml pulls from.
            prefix=os.environ.get("IMAGE_PREFIX")
            or yaml.safe_load((CHART / "values.yaml").read_text())["sandbox"]["image"]["repository"].rsplit("/", 1)[0],
            tag=tag,
            torch_variant=variant,
            python=os.environ.get("PYTHON_IMAGE", "thinkmesh/python:3.11-bookworm"),
            redis=f"thinkmesh-test/redis:{tag}",
        )

    def suffix(self, name: str) -> str:
        return "-cpu" if self.torch_variant == "cpu" and name in TORCH_IMAGES else ""

    def check_present(self, refs: set[str]) -> None:
        missing = [ref for ref in sorted(refs) if docker("image", "inspect", ref, check=False).returncode != 0]
        if missing:
            pytest.fail(f"not in the local Docker engine: {', '.join(missing)}; {MAKE_IMAGES}", pytrace=False)

    def build_redis(self) -> None:
        """The test-only Redis, on the same base as the images (the legacy builder: BuildKit cannot run offline)."""
        proc = subprocess.run(
            ["docker", "build", "--quiet", "--build-arg", f"PYTHON_IMAGE={self.python}", "--tag", self.redis, "-"],
            input=(HERE / "redis.Dockerfile").read_text(),
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        if proc.returncode != 0:
            pytest.fail(f"could not build {self.redis} from tests/images/redis.Dockerfile:\n{proc.stderr}")


def _values(images: Images, token: str, redis_password: str) -> tuple[dict[str, Any], dict[str, str]]:
    """What the checks change in the chart's values (as `helm install -f` would), and the image reference each
    thinkmesh component must then render."""
    values: dict[str, Any] = {
        "clusterDomain": CLUSTER_DOMAIN,
        "tls": {"enabled": False},  # the default; the tests dial plaintext
        # Known secrets instead of random ones, so that the tests can authenticate.
        "auth": {"tokens": [token]},
        "redis": {"auth": {"password": redis_password}},
    }
    expected = {}
    for component, component_values in yaml.safe_load((CHART / "values.yaml").read_text()).items():
        repository = (
            component_values.get("image", {}).get("repository", "") if isinstance(component_values, dict) else ""
        )
        name = repository.rsplit("/", 1)[-1]
        if not name.startswith("thinkmesh-"):
            continue  # not one of ours (Redis)
        suffix = images.suffix(name)
        image = {"repository": f"{images.prefix}/{name}", "tag": images.tag, "tagSuffix": suffix, "digest": ""}
        values[component] = {"image": image}
        expected[component] = f"{images.prefix}/{name}:{images.tag}{suffix}"
        if suffix:  # the CPU build: no GPU to ask for (null removes the default, as in values/cpu-trial.yaml)
            no_gpu = {"nvidia.com/gpu": None}
            values[component]["resources"] = {"requests": no_gpu, "limits": no_gpu}
    if images.torch_variant == "cpu":
        values["policy"]["config"] = {"backend": "hf"}  # the CPU image has transformers and no vLLM
    return values, expected


def _workloads(manifests: Rendered, expected_images: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The rendered workloads by component: all of them, each thinkmesh one with the image expected."""
    workloads = {
        w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: w for w in manifests.workloads()
    }
    assert sorted(workloads) == sorted(COMPONENTS), (
        f"the chart renders {sorted(workloads)}; start order knows {COMPONENTS}"
    )
    for component, image in expected_images.items():
        (container,) = workloads[component]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image, f"{component}: the chart renders {container['image']}, not {image}"
    return workloads


def _import_micro_models(session: Session, trainer: Pod, scratch: Path) -> None:
    """Micro models made here, imported into the store by `thinkmesh models import` in the trainer's image, run
    as the trainer's pod (which mounts the store read-write), without network."""
    policy, ppm = publish_micro_models(ModelStore(scratch))
    for path in (scratch, *scratch.rglob("*")):  # readable by the pod's uid
        path.chmod(0o755 if path.is_dir() else 0o644)
    for version in (policy, ppm):
        source = f"/import/{version.path.relative_to(scratch)}"
        importer = replace(
            trainer, component=f"import-{version.kind}", args=("models", "import", source, "--kind", version.kind)
        )
        session.run_once(importer, "--volume", f"{scratch}:/import:ro", timeout=300)


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
    values, expected_images = _values(images, token, redis_password=secrets.token_urlsafe(24))
    values_file = root / "values.yaml"
    values_file.write_text(json.dumps(values))  # JSON is YAML
    manifests = render("-f", str(values_file))
    workloads = _workloads(manifests, expected_images)
    # The chart's Redis image cannot be pulled here: the test image from redis.Dockerfile runs instead, with the
    # rendered command and arguments unchanged (Debian's redis-server takes them all).
    (redis,) = workloads["redis"]["spec"]["template"]["spec"]["containers"]
    images.check_present({images.python, *expected_images.values()})
    images.build_redis()

    session = Session(helper_image=images.python)
    kubelet = Kubelet(
        manifests,
        scratch=root / "volumes",
        volume_prefix=session.prefix,
        host_cpus=host_cpus,
        images={redis["image"]: images.redis},
    )
    pods = {component: kubelet.pod(workloads[component]) for component in COMPONENTS}
    try:
        session.create_network()
        for component in COMPONENTS:
            if component == "trainer":
                _import_micro_models(session, pods["trainer"], root / "models")
            session.start(pods[component])
        yield Deployment(manifests, session, token)
    finally:
        session.close()
